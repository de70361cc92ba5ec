//! The health service: a Pingora background service that runs every upstream pool's DNS refresh and
//! active health checks on its own runtime, away from the request workers.

use super::UpstreamPool;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;

pub struct HealthService {
    pub pools: Vec<Arc<UpstreamPool>>,
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, shutdown: ShutdownWatch) {
        let tasks: Vec<_> = self
            .pools
            .iter()
            .map(|p| {
                let pool = p.clone();
                let sd = shutdown.clone();
                tokio::spawn(async move { pool.run(sd).await })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }
}
