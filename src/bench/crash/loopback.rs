//! The loopback servers the crash loop drives the real binary against: a recorder that
//! logs every HTTP request it receives (the external world whose effects are counted), and
//! an OpenAI-compatible model server whose replies a shape computes from the conversation.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: String,
}

/// Reads one HTTP/1.1 request (head and `content-length` body) from `stream`.
fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut head = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        if head.is_empty() {
            head = line.trim().to_string();
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    let mut parts = head.split_whitespace();
    Some(Request {
        method: parts.next()?.to_string(),
        path: parts.next()?.to_string(),
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn respond(mut stream: TcpStream, content_type: &str, body: &str) {
    let _ = stream.write_all(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

/// Serves `handle` on a fresh loopback port, one thread per connection.
fn serve(handle: impl Fn(Request, TcpStream) + Send + Sync + 'static) -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let handle = handle.clone();
            std::thread::spawn(move || {
                if let Some(request) = read_request(&stream) {
                    handle(request, stream);
                }
            });
        }
    });
    Ok(port)
}

/// A loopback HTTP server that records every request before it answers; a POST is answered
/// only after `post_delay`, so a host can be killed while its effect is in flight.
#[derive(Clone)]
pub struct Recorder {
    pub port: u16,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Recorder {
    pub fn start(post_delay: Duration) -> std::io::Result<Recorder> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let port = serve(move |request, stream| {
            let post = request.method == "POST";
            log.lock().unwrap().push(request);
            if post {
                std::thread::sleep(post_delay);
            }
            respond(stream, "text/plain", "ok");
        })?;
        Ok(Recorder { port, seen })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// How many POSTs reached `path`.
    pub fn posts_to(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == "POST" && r.path == path)
            .count()
    }

    /// How many POSTs reached each path; prints every repeated one with its bodies.
    pub fn received(&self) -> BTreeMap<String, usize> {
        let posts = self.posts();
        let mut received: BTreeMap<String, usize> = BTreeMap::new();
        for post in &posts {
            *received.entry(post.path.clone()).or_default() += 1;
        }
        for (path, n) in received.iter().filter(|(_, n)| **n > 1) {
            let bodies: Vec<&str> = posts
                .iter()
                .filter(|p| &p.path == path)
                .map(|p| p.body.as_str())
                .collect();
            eprintln!("REPEATED: POST {path} received {n} times, bodies {bodies:?}");
        }
        received
    }

    /// Every POST received so far, in arrival order.
    pub fn posts(&self) -> Vec<Request> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == "POST")
            .cloned()
            .collect()
    }
}

/// What a shape's model answers: the next assistant message for a conversation.
pub type Script = dyn Fn(&[Value]) -> Value + Send + Sync;

/// An OpenAI-compatible chat-completions server on loopback: each request's messages go to
/// the shape's script, and every conversation it is sent is kept (the model is the client
/// that learns an effect's result, so what it was told is what was acknowledged).
#[derive(Clone)]
pub struct ModelServer {
    pub port: u16,
    conversations: Arc<Mutex<Vec<Vec<Value>>>>,
}

impl ModelServer {
    pub fn start(script: Box<Script>) -> std::io::Result<ModelServer> {
        let conversations = Arc::new(Mutex::new(Vec::new()));
        let log = conversations.clone();
        let port = serve(move |request, stream| {
            let body: Value = serde_json::from_str(&request.body).unwrap_or(Value::Null);
            let messages = body["messages"].as_array().cloned().unwrap_or_default();
            let message = script(&messages);
            log.lock().unwrap().push(messages);
            let reply = json!({
                "id": "chatcmpl-crash", "object": "chat.completion",
                "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
            });
            respond(stream, "application/json", &reply.to_string());
        })?;
        Ok(ModelServer {
            port,
            conversations,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Every conversation the model was sent so far.
    pub fn conversations(&self) -> Vec<Vec<Value>> {
        self.conversations.lock().unwrap().clone()
    }
}

/// An assistant message calling `calls` (`(id, name, arguments)`), in order.
pub fn tool_calls(calls: &[(String, &str, Value)]) -> Value {
    let calls: Vec<Value> = calls
        .iter()
        .map(|(id, name, args)| {
            json!({"id": id, "type": "function",
                   "function": {"name": name, "arguments": args.to_string()}})
        })
        .collect();
    json!({"role": "assistant", "content": null, "tool_calls": calls})
}

/// A final assistant message (no tool calls: the run finishes).
pub fn finish(text: &str) -> Value {
    json!({"role": "assistant", "content": text})
}

/// The calls of every assistant message in `messages` that the conversation answered
/// successfully: `(call id, tool name, arguments, result)`.
pub fn answered_calls(messages: &[Value]) -> Vec<(String, String, Value, Value)> {
    let mut out = Vec::new();
    for m in messages.iter().filter(|m| m["role"] == "assistant") {
        for call in m["tool_calls"].as_array().into_iter().flatten() {
            let id = call["id"].as_str().unwrap_or_default();
            let Some(answer) = messages
                .iter()
                .find(|r| r["role"] == "tool" && r["tool_call_id"] == id)
            else {
                continue;
            };
            let result: Value = answer["content"]
                .as_str()
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or(Value::Null);
            let args: Value = call["function"]["arguments"]
                .as_str()
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or(Value::Null);
            let name = call["function"]["name"].as_str().unwrap_or_default();
            out.push((id.to_string(), name.to_string(), args, result));
        }
    }
    out
}

/// The goal token of a conversation: the first word after `Goal:` in its first user
/// message (the crash loop gives each process a one-word goal).
pub fn goal(messages: &[Value]) -> String {
    messages
        .iter()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .map(|text| text.trim_start_matches("Goal:"))
        .and_then(|text| text.split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}
