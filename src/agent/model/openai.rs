//! An OpenAI-compatible chat-completions client (`POST {base_url}/chat/completions`).
//!
//! Retries 429 and 5xx answers and transport failures with exponential backoff, honoring a
//! `Retry-After` header given in seconds. Errors carry the HTTP status and an excerpt of the
//! body; a reply that is not the expected JSON names the missing field. The API key is
//! passed in (the CLI reads it from an environment variable whose name is configurable).

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{
    excerpt, ChatModel, ChatResponse, Message, ModelError, Role, ToolCall, ToolSpec, Usage,
};

/// The environment variable the CLI reads the API key from unless told otherwise.
pub const DEFAULT_API_KEY_ENV: &str = "OPENAI_API_KEY";

/// How long an error body excerpt may be.
const BODY_EXCERPT: usize = 500;

/// Configuration of an [`OpenAiClient`].
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// E.g. `https://api.openai.com/v1` (the client appends `/chat/completions`).
    pub base_url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer …` when present.
    pub api_key: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries after the first attempt (on 429, 5xx and transport errors).
    pub max_retries: u32,
    /// First backoff; doubles each retry up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Upper bound of one wait, including one asked for by `Retry-After`.
    pub max_backoff: Duration,
    pub temperature: Option<f64>,
    /// `max_tokens` of each completion.
    pub max_completion_tokens: Option<u64>,
}

impl OpenAiConfig {
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> OpenAiConfig {
        OpenAiConfig {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            timeout: Duration::from_secs(120),
            max_retries: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            temperature: None,
            max_completion_tokens: None,
        }
    }

    pub fn with_api_key(mut self, key: Option<String>) -> OpenAiConfig {
        self.api_key = key.filter(|k| !k.is_empty());
        self
    }
}

/// Reads an API key from the environment variable `name` (empty counts as unset).
pub fn api_key_from_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A chat-completions client.
pub struct OpenAiClient {
    config: OpenAiConfig,
    http: reqwest::Client,
    endpoint: String,
}

impl OpenAiClient {
    pub fn new(config: OpenAiConfig) -> Result<OpenAiClient, ModelError> {
        if config.model.trim().is_empty() {
            return Err(ModelError::Config("the model name is empty".into()));
        }
        let base = config.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ModelError::Config(format!(
                "base URL '{}' must start with http:// or https://",
                config.base_url
            )));
        }
        let endpoint = format!("{base}/chat/completions");
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| ModelError::Config(format!("building the HTTP client: {e}")))?;
        Ok(OpenAiClient {
            config,
            http,
            endpoint,
        })
    }

    /// The request body for `messages` and `tools`.
    pub fn request_body(&self, messages: &[Message], tools: &[ToolSpec]) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), json!(self.config.model));
        body.insert(
            "messages".into(),
            Value::Array(messages.iter().map(wire_message).collect()),
        );
        if !tools.is_empty() {
            body.insert(
                "tools".into(),
                Value::Array(
                    tools
                        .iter()
                        .map(|t| {
                            json!({"type": "function", "function": {
                                "name": t.name,
                                "description": t.description,
                                "parameters": t.parameters,
                            }})
                        })
                        .collect(),
                ),
            );
        }
        if let Some(t) = self.config.temperature {
            body.insert("temperature".into(), json!(t));
        }
        if let Some(m) = self.config.max_completion_tokens {
            body.insert("max_tokens".into(), json!(m));
        }
        Value::Object(body)
    }

    fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(16));
        self.config
            .initial_backoff
            .saturating_mul(factor)
            .min(self.config.max_backoff)
    }
}

#[async_trait::async_trait]
impl ChatModel for OpenAiClient {
    async fn complete(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
    ) -> Result<ChatResponse, ModelError> {
        let body = self.request_body(messages, tools);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let mut request = self.http.post(&self.endpoint).json(&body);
            if let Some(key) = &self.config.api_key {
                request = request.bearer_auth(key);
            }
            let retries_left = attempt <= self.config.max_retries;
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    if retries_left {
                        let wait = self.backoff(attempt - 1);
                        tracing::warn!(attempt, ?wait, error = %e, "model request failed; retrying");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(ModelError::Transport {
                        message: describe_reqwest(&e),
                        attempts: attempt,
                    });
                }
            };
            let status = response.status();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let text = match response.text().await {
                Ok(t) => t,
                Err(e) => {
                    if retries_left {
                        tokio::time::sleep(self.backoff(attempt - 1)).await;
                        continue;
                    }
                    return Err(ModelError::Transport {
                        message: format!("reading the reply: {}", describe_reqwest(&e)),
                        attempts: attempt,
                    });
                }
            };
            if status.is_success() {
                return parse_reply(&text);
            }
            let retryable = status.as_u16() == 429 || status.is_server_error();
            if retryable && retries_left {
                let wait = retry_after
                    .map(|w| w.min(self.config.max_backoff))
                    .unwrap_or_else(|| self.backoff(attempt - 1));
                tracing::warn!(
                    attempt,
                    status = status.as_u16(),
                    ?wait,
                    "model server busy; retrying"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            return Err(ModelError::Http {
                status: status.as_u16(),
                body: excerpt(&text, BODY_EXCERPT),
                attempts: attempt,
            });
        }
    }
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("timed out: {e}")
    } else if e.is_connect() {
        format!("could not connect: {e}")
    } else {
        e.to_string()
    }
}

/// `Retry-After` in (possibly fractional) seconds; HTTP dates are not honored.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    if secs.is_finite() && secs >= 0.0 {
        Some(Duration::from_secs_f64(secs))
    } else {
        None
    }
}

/// A message in the chat-completions wire form.
fn wire_message(m: &Message) -> Value {
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut out = Map::new();
    out.insert("role".into(), json!(role));
    out.insert(
        "content".into(),
        m.content.clone().map(Value::String).unwrap_or(Value::Null),
    );
    if !m.tool_calls.is_empty() {
        out.insert(
            "tool_calls".into(),
            Value::Array(
                m.tool_calls
                    .iter()
                    .map(|c| {
                        let arguments = match &c.arguments {
                            Value::String(raw) => raw.clone(),
                            other => other.to_string(),
                        };
                        json!({"id": c.id, "type": "function",
                               "function": {"name": c.name, "arguments": arguments}})
                    })
                    .collect(),
            ),
        );
    }
    if let Some(id) = &m.tool_call_id {
        out.insert("tool_call_id".into(), json!(id));
    }
    Value::Object(out)
}

/// Parses a chat-completions reply body.
pub fn parse_reply(text: &str) -> Result<ChatResponse, ModelError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        ModelError::Malformed(format!(
            "the body is not JSON ({e}): {}",
            excerpt(text, BODY_EXCERPT)
        ))
    })?;
    if let Some(err) = value.get("error").filter(|e| !e.is_null()) {
        return Err(ModelError::Malformed(format!(
            "the reply is an error object: {}",
            excerpt(&err.to_string(), BODY_EXCERPT)
        )));
    }
    let choices = value
        .get("choices")
        .and_then(Value::as_array)
        .ok_or_else(|| missing("`choices` (an array)", &value))?;
    let choice = choices
        .first()
        .ok_or_else(|| ModelError::Malformed("`choices` is empty".into()))?;
    let message = choice
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| missing("`choices[0].message` (an object)", &value))?;
    let content = match message.get("content") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(parts)) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(""),
        ),
        Some(other) => {
            return Err(ModelError::Malformed(format!(
                "`choices[0].message.content` is neither a string nor null: {other}"
            )))
        }
    };
    let mut tool_calls = Vec::new();
    match message.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (i, call) in calls.iter().enumerate() {
                let function = call.get("function").ok_or_else(|| {
                    ModelError::Malformed(format!(
                        "`choices[0].message.tool_calls[{i}].function` is missing"
                    ))
                })?;
                let name = function
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ModelError::Malformed(format!(
                            "`choices[0].message.tool_calls[{i}].function.name` is missing"
                        ))
                    })?;
                let arguments = match function.get("arguments") {
                    None | Some(Value::Null) => json!({}),
                    Some(Value::String(raw)) if raw.trim().is_empty() => json!({}),
                    Some(Value::String(raw)) => {
                        serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone()))
                    }
                    Some(other) => other.clone(),
                };
                let id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .unwrap_or_else(|| format!("call_{i}"));
                tool_calls.push(ToolCall {
                    id,
                    name: name.to_string(),
                    arguments,
                });
            }
        }
        Some(other) => {
            return Err(ModelError::Malformed(format!(
                "`choices[0].message.tool_calls` is not an array: {}",
                excerpt(&other.to_string(), 200)
            )))
        }
    }
    let usage = match value.get("usage") {
        Some(u) if u.is_object() => serde_json::from_value(u.clone()).unwrap_or_default(),
        _ => Usage::default(),
    };
    Ok(ChatResponse {
        message: Message::assistant(content, tool_calls),
        usage,
    })
}

fn missing(what: &str, value: &Value) -> ModelError {
    ModelError::Malformed(format!(
        "the reply has no {what}: {}",
        excerpt(&value.to_string(), BODY_EXCERPT)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_and_tool_calls() {
        let reply = parse_reply(
            r#"{"choices":[{"message":{"role":"assistant","content":null,
                "tool_calls":[{"id":"c1","type":"function","function":{"name":"fs_list","arguments":"{\"path\":\".\"}"}}]}}],
                "usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
        )
        .unwrap();
        assert_eq!(reply.message.tool_calls[0].name, "fs_list");
        assert_eq!(reply.message.tool_calls[0].arguments, json!({"path": "."}));
        assert_eq!(reply.usage.total_tokens, 5);
    }

    #[test]
    fn names_what_is_missing() {
        let err = parse_reply(r#"{"id":"x"}"#).unwrap_err().to_string();
        assert!(err.contains("choices"), "{err}");
        let err = parse_reply(r#"{"choices":[{}]}"#).unwrap_err().to_string();
        assert!(err.contains("choices[0].message"), "{err}");
        let err = parse_reply("not json").unwrap_err().to_string();
        assert!(err.contains("not JSON"), "{err}");
    }

    #[test]
    fn retry_after_in_seconds() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
