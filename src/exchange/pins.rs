//! Responses API conversations are stored upstream: a request with `previous_response_id` must go
//! to the upstream that created that response. The gateway remembers which upstream answered each
//! response id it relayed: in process (bounded), and in `state.redis` when configured, so every
//! instance behind a load balancer routes a conversation's next turn to the same upstream.

use crate::redis_conn::{timed, RedisConn};
use std::sync::Arc;
use std::time::Duration;

/// Ids remembered in process (OpenAI keeps stored responses 30 days).
const LOCAL_CAPACITY: u64 = 200_000;
const TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Response id → the name of the upstream that created it.
pub struct ResponsePins {
    local: moka::sync::Cache<String, Arc<str>>,
}

impl Default for ResponsePins {
    fn default() -> Self {
        ResponsePins {
            local: moka::sync::Cache::builder()
                .max_capacity(LOCAL_CAPACITY)
                .time_to_live(TTL)
                .build(),
        }
    }
}

fn redis_key(id: &str) -> String {
    format!("llmproxy:resp:{id}")
}

impl ResponsePins {
    /// Remember that `upstream` created `id` (in Redis too, in the background).
    pub fn insert(&self, id: &str, upstream: &str, redis: Option<&Arc<RedisConn>>) {
        let upstream: Arc<str> = Arc::from(upstream);
        self.local.insert(id.to_string(), upstream.clone());
        if let Some(r) = redis {
            let (r, key) = (r.clone(), redis_key(id));
            tokio::spawn(async move {
                let set = async {
                    let mut conn = r.get().await?;
                    timed(
                        redis::cmd("SET")
                            .arg(&key)
                            .arg(&*upstream)
                            .arg("EX")
                            .arg(TTL.as_secs())
                            .query_async::<()>(&mut conn),
                    )
                    .await
                };
                if let Err(e) = set.await {
                    log::debug!("response pins: redis SET failed: {e}");
                }
            });
        }
    }

    /// The upstream that created `id`, if this instance or (with Redis) any instance relayed it.
    pub async fn get(&self, id: &str, redis: Option<&Arc<RedisConn>>) -> Option<Arc<str>> {
        if let Some(u) = self.local.get(id) {
            return Some(u);
        }
        let r = redis?;
        let got = async {
            let mut conn = r.get().await?;
            timed(
                redis::cmd("GET")
                    .arg(redis_key(id))
                    .query_async::<Option<String>>(&mut conn),
            )
            .await
        };
        match got.await {
            Ok(Some(u)) => {
                let u: Arc<str> = Arc::from(u.as_str());
                self.local.insert(id.to_string(), u.clone());
                Some(u)
            }
            Ok(None) => None,
            Err(e) => {
                log::debug!("response pins: redis GET failed: {e}");
                None
            }
        }
    }
}

/// The `id` of a Responses API answer (`resp_...`), from its first bytes: the object itself, or
/// the stream's first event (`response.created`).
pub fn response_id(first: &[u8]) -> Option<&str> {
    let at = memchr::memmem::find(first, b"\"id\":\"resp_")? + 6;
    let len = memchr::memchr(b'"', &first[at..])?;
    std::str::from_utf8(&first[at..at + len])
        .ok()
        .filter(|id| id.len() <= 256)
}

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn finds_response_ids() {
        assert_eq!(
            response_id(br#"{"id":"resp_abc123","object":"response"}"#),
            Some("resp_abc123")
        );
        assert_eq!(
            response_id(b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_9\",\"status\":\"in_progress\"}}\n\n"),
            Some("resp_9")
        );
        assert_eq!(response_id(br#"{"id":"chatcmpl-1"}"#), None);
    }
}
