//! A scripted model: replays a fixed list of replies, for deterministic runs and fixtures.
//!
//! A script is a JSON array of replies, or JSONL (one reply per line; blank lines and lines
//! starting with `#` are skipped). Each reply is
//! `{"content"?: "text", "tool_calls"?: [{"name": "fs_read_text", "arguments": {...}}], "usage"?: {...}}`.
//! Asking for more replies than the script holds is an error that says so.

use std::collections::VecDeque;
use std::path::Path;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{ChatModel, ChatResponse, Message, ModelError, ToolCall, ToolSpec, Usage};

/// One scripted tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptedCall {
    pub name: String,
    #[serde(default = "empty_object")]
    pub arguments: Value,
    /// Defaults to `call_<reply>_<index>`.
    #[serde(default)]
    pub id: Option<String>,
}

fn empty_object() -> Value {
    json!({})
}

/// One scripted assistant reply.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedReply {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub tool_calls: Vec<ScriptedCall>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

impl ScriptedReply {
    pub fn text(text: impl Into<String>) -> ScriptedReply {
        ScriptedReply {
            content: Some(text.into()),
            ..ScriptedReply::default()
        }
    }

    pub fn call(name: impl Into<String>, arguments: Value) -> ScriptedReply {
        ScriptedReply {
            tool_calls: vec![ScriptedCall {
                name: name.into(),
                arguments,
                id: None,
            }],
            ..ScriptedReply::default()
        }
    }
}

/// What a scripted model saw on one call (for tests).
#[derive(Debug, Clone, PartialEq)]
pub struct SeenRequest {
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
}

/// Replays replies in order.
pub struct ScriptedModel {
    total: usize,
    replies: Mutex<VecDeque<ScriptedReply>>,
    seen: Mutex<Vec<SeenRequest>>,
}

impl ScriptedModel {
    pub fn new(replies: Vec<ScriptedReply>) -> ScriptedModel {
        ScriptedModel {
            total: replies.len(),
            replies: Mutex::new(replies.into()),
            seen: Mutex::new(Vec::new()),
        }
    }

    /// Parses a script (a JSON array, or JSONL).
    pub fn parse(text: &str) -> Result<ScriptedModel, ModelError> {
        let trimmed = text.trim_start();
        let replies: Vec<ScriptedReply> = if trimmed.starts_with('[') {
            serde_json::from_str(trimmed)
                .map_err(|e| ModelError::Script(format!("the JSON array does not parse: {e}")))?
        } else {
            let mut replies = Vec::new();
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                replies.push(serde_json::from_str(line).map_err(|e| {
                    ModelError::Script(format!("line {}: not a reply: {e}", n + 1))
                })?);
            }
            replies
        };
        Ok(ScriptedModel::new(replies))
    }

    /// Reads a script file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<ScriptedModel, ModelError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelError::Script(format!("reading {}: {e}", path.display())))?;
        ScriptedModel::parse(&text)
            .map_err(|e| ModelError::Script(format!("{}: {e}", path.display())))
    }

    /// Replies not yet used.
    pub fn remaining(&self) -> usize {
        self.replies.lock().len()
    }

    /// Every request this model answered (or refused), in order.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().clone()
    }
}

#[async_trait::async_trait]
impl ChatModel for ScriptedModel {
    async fn complete(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
    ) -> Result<ChatResponse, ModelError> {
        let call = {
            let mut seen = self.seen.lock();
            seen.push(SeenRequest {
                messages: messages.to_vec(),
                tools: tools.to_vec(),
            });
            seen.len()
        };
        let reply = self
            .replies
            .lock()
            .pop_front()
            .ok_or(ModelError::ScriptExhausted {
                replies: self.total,
                call,
            })?;
        let tool_calls = reply
            .tool_calls
            .into_iter()
            .enumerate()
            .map(|(i, c)| ToolCall {
                id: c.id.unwrap_or_else(|| format!("call_{call}_{i}")),
                name: c.name,
                arguments: c.arguments,
            })
            .collect();
        Ok(ChatResponse {
            message: Message::assistant(reply.content, tool_calls),
            usage: reply.usage.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replays_jsonl_then_runs_out() {
        let model = ScriptedModel::parse(
            "# a script\n{\"tool_calls\":[{\"name\":\"fs_list\"}]}\n\n{\"content\":\"done\"}\n",
        )
        .unwrap();
        let first = model.complete(&[], &[]).await.unwrap();
        assert_eq!(first.message.tool_calls[0].name, "fs_list");
        assert_eq!(first.message.tool_calls[0].arguments, json!({}));
        let second = model.complete(&[], &[]).await.unwrap();
        assert_eq!(second.message.content.as_deref(), Some("done"));
        let err = model.complete(&[], &[]).await.unwrap_err().to_string();
        assert!(err.contains("has 2 replies") && err.contains("call 3"), "{err}");
    }

    #[test]
    fn bad_lines_are_named() {
        let err = ScriptedModel::parse("{\"content\":\"a\"}\n{oops}\n")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
