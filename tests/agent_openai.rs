//! The OpenAI-compatible client against a local chat-completions server started by the test
//! (127.0.0.1, port 0): a plain reply, a tool-call round trip through the agent loop, 429
//! and 5xx retries, and clear errors for bad statuses and malformed replies.
// Tests build their fixtures on the host and drive the real binary.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use agent_libos::agent::model::{ChatModel, Message, ModelError, OpenAiClient, OpenAiConfig};
use agent_libos::agent::{run_agent, RunOptions, StopReason};
use agent_libos::kernel::CapabilitySpec;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One canned HTTP answer.
struct Canned {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn ok(body: Value) -> Canned {
    Canned {
        status: 200,
        headers: vec![],
        body: body.to_string(),
    }
}

fn status(code: u16, body: &str, headers: Vec<(&'static str, String)>) -> Canned {
    Canned {
        status: code,
        headers,
        body: body.into(),
    }
}

/// A request the server received.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: Value,
}

/// A one-request-per-connection HTTP/1.1 server answering from a queue.
struct FakeServer {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn serve(replies: Vec<Canned>) -> FakeServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let queue = Arc::new(Mutex::new(VecDeque::from(replies)));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                let n = socket.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break (String::new(), Vec::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let length = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    let mut body = buf[end + 4..].to_vec();
                    while body.len() < length {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        body.extend_from_slice(&chunk[..n]);
                    }
                    break (head, body);
                }
            };
            if head.is_empty() {
                continue;
            }
            log.lock().push(Seen {
                head: head.clone(),
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            });
            let reply = queue.lock().pop_front().unwrap_or_else(|| {
                status(
                    500,
                    r#"{"error":"the test server ran out of replies"}"#,
                    vec![],
                )
            });
            let mut out = format!(
                "HTTP/1.1 {} Canned\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                reply.status,
                reply.body.len()
            );
            for (k, v) in &reply.headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            out.push_str(&reply.body);
            let _ = socket.write_all(out.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    FakeServer { url, seen }
}

fn client(url: &str) -> OpenAiClient {
    let mut config = OpenAiConfig::new(url, "test-model").with_api_key(Some("sk-test".into()));
    config.initial_backoff = Duration::from_millis(10);
    config.max_backoff = Duration::from_millis(200);
    config.max_retries = 2;
    config.timeout = Duration::from_secs(10);
    OpenAiClient::new(config).unwrap()
}

fn text_reply(text: &str) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    })
}

#[tokio::test]
async fn a_plain_reply() {
    let server = serve(vec![ok(text_reply("hello"))]).await;
    let reply = client(&server.url)
        .complete(&[Message::system("be brief"), Message::user("hi")], &[])
        .await
        .unwrap();
    assert_eq!(reply.message.content.as_deref(), Some("hello"));
    assert!(reply.message.tool_calls.is_empty());
    assert_eq!(reply.usage.total_tokens, 15);
    let seen = server.seen.lock().clone();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0]
            .head
            .starts_with("POST /v1/chat/completions HTTP/1.1"),
        "{}",
        seen[0].head
    );
    assert!(seen[0]
        .head
        .to_ascii_lowercase()
        .contains("authorization: bearer sk-test"));
    assert_eq!(seen[0].body["model"], "test-model");
    assert_eq!(
        seen[0].body["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );
    assert!(seen[0].body.get("tools").is_none());
}

#[tokio::test]
async fn a_tool_call_round_trip_through_the_agent_loop() {
    let server = serve(vec![
        ok(
            json!({"choices": [{"message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_abc", "type": "function", "function": {
                "name": "fs_write_text",
                "arguments": "{\"path\":\"hello.txt\",\"content\":\"hi there\"}"}}]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}),
        ),
        ok(text_reply("Wrote hello.txt.")),
    ])
    .await;
    let h = common::host().await;
    let model = client(&server.url);
    let outcome = run_agent(
        &h.kernel,
        RunOptions {
            image: "base".into(),
            goal: "greet in a file".into(),
            grants: vec![CapabilitySpec::parse_grant("fs:**=read,write").unwrap()],
            ..RunOptions::default()
        },
        &model,
    )
    .await
    .unwrap();
    assert_eq!(outcome.stop, StopReason::Finished);
    assert_eq!(outcome.exit, Some(json!({"result": "Wrote hello.txt."})));
    assert_eq!(outcome.usage.total_tokens, 135);
    assert_eq!(
        std::fs::read_to_string(h.workspace().join("hello.txt")).unwrap(),
        "hi there"
    );
    let seen = server.seen.lock().clone();
    assert_eq!(seen.len(), 2);
    // The first request offered the tools as functions.
    let tools = seen[0].body["tools"].as_array().unwrap();
    assert!(tools.iter().any(|t| t["type"] == "function"
        && t["function"]["name"] == "fs_write_text"
        && t["function"]["parameters"]["required"] == json!(["path", "content"])));
    // The second carried the assistant's call and its result, linked by id.
    let messages = seen[1].body["messages"].as_array().unwrap();
    let assistant = &messages[messages.len() - 2];
    assert_eq!(assistant["role"], "assistant");
    assert_eq!(assistant["tool_calls"][0]["id"], "call_abc");
    let arguments: Value = serde_json::from_str(
        assistant["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(arguments["path"], "hello.txt");
    let tool = &messages[messages.len() - 1];
    assert_eq!(tool["role"], "tool");
    assert_eq!(tool["tool_call_id"], "call_abc");
    assert!(tool["content"].as_str().unwrap().contains("hello.txt"));
}

#[tokio::test]
async fn busy_answers_are_retried_honoring_retry_after() {
    let server = serve(vec![
        status(
            429,
            r#"{"error":{"message":"rate limited"}}"#,
            vec![("Retry-After", "0".into())],
        ),
        status(503, "upstream busy", vec![]),
        ok(text_reply("finally")),
    ])
    .await;
    let reply = client(&server.url)
        .complete(&[Message::user("hi")], &[])
        .await
        .unwrap();
    assert_eq!(reply.message.content.as_deref(), Some("finally"));
    assert_eq!(server.seen.lock().len(), 3);
}

#[tokio::test]
async fn retries_run_out_with_the_status_and_body() {
    let server = serve(vec![
        status(500, "boom 1", vec![]),
        status(500, "boom 2", vec![]),
        status(500, "boom 3", vec![]),
    ])
    .await;
    let err = client(&server.url)
        .complete(&[Message::user("hi")], &[])
        .await
        .unwrap_err();
    match &err {
        ModelError::Http {
            status,
            body,
            attempts,
        } => {
            assert_eq!(*status, 500);
            assert_eq!(body, "boom 3");
            assert_eq!(*attempts, 3);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("HTTP 500"), "{err}");
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    let server = serve(vec![status(
        401,
        r#"{"error":{"message":"Incorrect API key provided"}}"#,
        vec![],
    )])
    .await;
    let err = client(&server.url)
        .complete(&[Message::user("hi")], &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HTTP 401") && err.contains("Incorrect API key"),
        "{err}"
    );
    assert_eq!(server.seen.lock().len(), 1);
}

#[tokio::test]
async fn a_malformed_reply_is_a_clear_error() {
    let server = serve(vec![
        ok(json!({"id": "x", "object": "chat.completion"})),
        ok(json!({"choices": [{"message": {"role": "assistant",
            "tool_calls": [{"id": "c", "type": "function", "function": {"arguments": "{}"}}]}}]})),
        Canned {
            status: 200,
            headers: vec![],
            body: "<html>gateway</html>".into(),
        },
    ])
    .await;
    let model = client(&server.url);
    let err = model
        .complete(&[Message::user("hi")], &[])
        .await
        .unwrap_err();
    assert!(matches!(err, ModelError::Malformed(_)));
    assert!(err.to_string().contains("`choices`"), "{err}");
    let err = model
        .complete(&[Message::user("hi")], &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("tool_calls[0].function.name"), "{err}");
    let err = model
        .complete(&[Message::user("hi")], &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not JSON") && err.contains("gateway"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_transport_error() {
    // Bind and drop a listener to get a port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = client(&format!("http://127.0.0.1:{port}/v1"))
        .complete(&[Message::user("hi")], &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ModelError::Transport { attempts: 3, .. }),
        "{err:?}"
    );
}
