//! The health service: a Pingora background service that runs every upstream pool's DNS refresh and
//! active health checks on its own runtime, away from the request workers. The set of pools follows
//! config reloads: new pools start, removed ones stop, unchanged ones keep running undisturbed.

use super::UpstreamPool;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use tokio::sync::watch;

pub struct HealthService {
    pub pools: watch::Receiver<Vec<Arc<UpstreamPool>>>,
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut pools = self.pools.clone();
        let mut running: Vec<(Arc<UpstreamPool>, tokio::task::JoinHandle<()>)> = Vec::new();
        loop {
            let current = pools.borrow_and_update().clone();
            running.retain(|(p, task)| {
                let keep = current.iter().any(|c| Arc::ptr_eq(c, p));
                if !keep {
                    task.abort();
                }
                keep
            });
            for p in current {
                if !running.iter().any(|(r, _)| Arc::ptr_eq(r, &p)) {
                    let (pool, sd) = (p.clone(), shutdown.clone());
                    running.push((p, tokio::spawn(async move { pool.run(sd).await })));
                }
            }
            tokio::select! {
                changed = pools.changed() => if changed.is_err() { break },
                _ = shutdown.changed() => if *shutdown.borrow() { break },
            }
        }
        for (_, task) in running {
            task.abort();
        }
    }
}
