//! The connection to `state.redis`, shared by the rate budgets and the response cache: one
//! multiplexed, auto-reconnecting connection per process, created on first use (on the runtime of
//! the request that needs it), with short timeouts so an unreachable Redis costs a request at most
//! [`REDIS_TIMEOUT`] before the caller's failure mode applies.

use std::time::Duration;

/// How long a Redis call may take before the caller gives up on it.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// Longest pause between reconnection attempts.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

pub struct RedisConn {
    pub url: String,
    client: redis::Client,
    conn: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
}

impl RedisConn {
    pub fn new(url: &str) -> Result<RedisConn, String> {
        let client = redis::Client::open(url).map_err(|e| format!("state.redis: {e}"))?;
        Ok(RedisConn {
            url: url.to_string(),
            client,
            conn: tokio::sync::OnceCell::new(),
        })
    }

    /// A handle to the connection (cheap to clone).
    pub async fn get(&self) -> redis::RedisResult<redis::aio::ConnectionManager> {
        let c = self
            .conn
            .get_or_try_init(|| async {
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(REDIS_TIMEOUT))
                    .set_response_timeout(Some(REDIS_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(RECONNECT_AFTER);
                redis::aio::ConnectionManager::new_lazy_with_config(self.client.clone(), cfg)
            })
            .await?;
        Ok(c.clone())
    }
}

/// Run a Redis call with [`REDIS_TIMEOUT`].
pub async fn timed<T>(
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(REDIS_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "redis call timed out",
        ))),
    }
}
