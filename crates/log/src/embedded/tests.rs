use std::sync::Arc;

use async_trait::async_trait;

use super::*;
use crate::contract::{Backend, contract_suite};

struct Embedded {
    dir: tempfile::TempDir,
}

impl Embedded {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
}

#[async_trait]
impl Backend for Embedded {
    async fn open(&self) -> Arc<dyn EventLog> {
        Arc::new(EmbeddedLog::open(self.dir.path(), EmbeddedOptions::default()).expect("open"))
    }

    async fn reopen(&self, log: Arc<dyn EventLog>) -> Arc<dyn EventLog> {
        drop(log);
        // The old handle's writer lets go of the directory lock as it exits.
        for _ in 0..200 {
            match EmbeddedLog::open(self.dir.path(), EmbeddedOptions::default()) {
                Ok(log) => return Arc::new(log),
                Err(Error::Locked { .. }) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
                Err(e) => panic!("reopen: {e}"),
            }
        }
        panic!("the store stayed locked after its handle was dropped");
    }
}

contract_suite!(Embedded::new());
