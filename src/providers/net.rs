//! Network provider (interface; implementation in progress).
use crate::kernel::authz::CheckedRequest;
use crate::kernel::error::SysResult;
use async_trait::async_trait;
use serde::Serialize;

#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    pub timeout_ms: u64,
    pub max_response_bytes: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FetchResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub truncated: bool,
}

#[async_trait]
pub trait Net: Send + Sync {
    async fn fetch(
        &self,
        req: &CheckedRequest,
        headers: &[(String, String)],
        body: Option<&str>,
        limits: FetchLimits,
    ) -> SysResult<FetchResponse>;
}

pub struct HttpNet {}
impl HttpNet {
    pub fn new() -> Self {
        HttpNet {}
    }
}
#[async_trait]
impl Net for HttpNet {
    async fn fetch(
        &self,
        _: &CheckedRequest,
        _: &[(String, String)],
        _: Option<&str>,
        _: FetchLimits,
    ) -> SysResult<FetchResponse> {
        todo!()
    }
}
pub fn url_resource(url: &str) -> Result<(String, String, u16), String> {
    Err(url.to_string())
}
