//! Model clients: the [`ChatModel`] trait the agent loop drives, the chat message types it
//! exchanges, an OpenAI-compatible HTTP client ([`openai`]) and a scripted model that replays
//! a file of replies ([`scripted`]) for deterministic runs and fixtures.
// The model client is the operator's: it reaches the model's HTTP endpoint, reads its API key and scripted replies.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod openai;
pub mod scripted;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use openai::{OpenAiClient, OpenAiConfig};
pub use scripted::{ScriptedCall, ScriptedModel, ScriptedReply};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// One function call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The id the tool result must quote back.
    pub id: String,
    pub name: String,
    /// The decoded arguments; a JSON string the model sent that did not parse is kept as
    /// `Value::String` so the loop can report it.
    #[serde(default)]
    pub arguments: Value,
}

/// One chat message (the shape persisted in a process's `agent.transcript`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For `Role::Tool`: the call this message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn system(text: impl Into<String>) -> Message {
        Message::text(Role::System, text)
    }

    pub fn user(text: impl Into<String>) -> Message {
        Message::text(Role::User, text)
    }

    pub fn assistant(content: Option<String>, tool_calls: Vec<ToolCall>) -> Message {
        Message {
            role: Role::Assistant,
            content,
            tool_calls,
            tool_call_id: None,
        }
    }

    pub fn tool(call_id: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: Role::Tool,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: Some(call_id.into()),
        }
    }

    fn text(role: Role, text: impl Into<String>) -> Message {
        Message {
            role,
            content: Some(text.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A function tool offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

/// Token usage of one or more model calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

impl Usage {
    /// Adds another call's usage (a missing total is the sum of the parts).
    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += if other.total_tokens == 0 {
            other.prompt_tokens + other.completion_tokens
        } else {
            other.total_tokens
        };
    }
}

/// What the model answered: an assistant message (text and/or tool calls) and its cost.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub message: Message,
    pub usage: Usage,
}

/// Why a model call failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The server answered with a non-success status (after any retries).
    #[error("model server answered HTTP {status} after {attempts} attempt(s): {body}")]
    Http {
        status: u16,
        /// The first part of the response body.
        body: String,
        attempts: u32,
    },
    /// The request never got an answer (connect error, timeout), after any retries.
    #[error("model request failed after {attempts} attempt(s): {message}")]
    Transport { message: String, attempts: u32 },
    /// The answer was not the expected JSON; the message names what was missing.
    #[error("malformed model reply: {0}")]
    Malformed(String),
    /// The scripted model was asked for more replies than its script holds.
    #[error("scripted model: the script has {replies} replies and call {call} asked for another")]
    ScriptExhausted { replies: usize, call: usize },
    /// The script file could not be read or parsed.
    #[error("scripted model: {0}")]
    Script(String),
    #[error("model client configuration: {0}")]
    Config(String),
}

/// A chat model: messages and tool specs in, an assistant message with optional tool calls
/// and token usage out.
#[async_trait::async_trait]
pub trait ChatModel: Send + Sync {
    async fn complete(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
    ) -> Result<ChatResponse, ModelError>;
}

/// The first `max` characters of `text`, marked when cut.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}… ({} bytes in all)", text.len())
    }
}
