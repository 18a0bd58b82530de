//! A scripted model: replays a fixed list of replies, for deterministic runs and fixtures.
//!
//! A script is a JSON array of replies, or JSONL (one reply per line; blank lines and lines
//! starting with `#` are skipped). Each reply is
//! `{"content"?: "text", "tool_calls"?: [{"name": "fs_read_text", "arguments": {...}}], "usage"?: {...}}`.
//! Asking for more replies than the script holds is an error that says so.
//!
//! A string argument that is exactly `${result}` or `${result.a.b}` is replaced by (a field
//! of) the most recent tool result in the conversation, decoded as JSON — so a script can
//! pass on ids it cannot know in advance (e.g. `tool_validate {"id": "${result.id}"}` after
//! `tool_propose`).

use std::collections::VecDeque;
use std::path::Path;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{ChatModel, ChatResponse, Message, ModelError, Role, ToolCall, ToolSpec, Usage};

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
        let last_result = last_tool_result(messages);
        let mut tool_calls = Vec::new();
        for (i, c) in reply.tool_calls.into_iter().enumerate() {
            tool_calls.push(ToolCall {
                id: c.id.unwrap_or_else(|| format!("call_{call}_{i}")),
                arguments: substitute(c.arguments, &last_result).map_err(|e| {
                    ModelError::Script(format!("reply {call}, call '{}': {e}", c.name))
                })?,
                name: c.name,
            });
        }
        Ok(ChatResponse {
            message: Message::assistant(reply.content, tool_calls),
            usage: reply.usage.unwrap_or_default(),
        })
    }
}

/// The most recent tool message's content, decoded as JSON when it is JSON.
fn last_tool_result(messages: &[Message]) -> Option<Value> {
    let content = messages
        .iter()
        .rev()
        .find(|m| m.role == Role::Tool)?
        .content
        .clone()?;
    Some(serde_json::from_str(&content).unwrap_or(Value::String(content)))
}

/// Replaces `${result...}` placeholders in `value`.
fn substitute(value: Value, result: &Option<Value>) -> Result<Value, String> {
    match value {
        Value::String(s) if s.starts_with("${result") && s.ends_with('}') => {
            let path = &s["${result".len()..s.len() - 1];
            let Some(mut current) = result.as_ref() else {
                return Err(format!("{s}: there is no tool result yet"));
            };
            for key in path.split('.').filter(|k| !k.is_empty()) {
                current = match current {
                    Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
                    other => other.get(key),
                }
                .ok_or_else(|| format!("{s}: the last tool result has no '{key}': {current}"))?;
            }
            Ok(current.clone())
        }
        Value::Array(items) => items
            .into_iter()
            .map(|v| substitute(v, result))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Value::Object(map) => map
            .into_iter()
            .map(|(k, v)| substitute(v, result).map(|v| (k, v)))
            .collect::<Result<_, _>>()
            .map(Value::Object),
        other => Ok(other),
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
        assert!(
            err.contains("has 2 replies") && err.contains("call 3"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn placeholders_take_the_last_tool_result() {
        let model = ScriptedModel::new(vec![ScriptedReply::call(
            "tool_validate",
            json!({"id": "${result.id}", "all": "${result}", "n": ["${result.list.1}"]}),
        )]);
        let messages = vec![Message::tool("c", r#"{"id":"t1","list":[1,2]}"#)];
        let reply = model.complete(&messages, &[]).await.unwrap();
        assert_eq!(
            reply.message.tool_calls[0].arguments,
            json!({"id": "t1", "all": {"id": "t1", "list": [1, 2]}, "n": [2]})
        );
        let model = ScriptedModel::new(vec![ScriptedReply::call(
            "x",
            json!({"id": "${result.nope}"}),
        )]);
        let err = model
            .complete(&messages, &[])
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no 'nope'"), "{err}");
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
