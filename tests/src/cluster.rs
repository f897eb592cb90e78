//! A 3-node NATS JetStream cluster on free ports, for tests that kill and
//! restart nodes (stream leaders included) under load.
//!
//! Each node is a real `nats-server` under a guardian
//! ([`crate::servers::Guarded`]), with its own store and a configuration
//! file written next to it; a restarted node keeps its ports, name and
//! store, so it rejoins as the same peer. The nodes share one
//! [`NatsUsers`]: the same accounts, users and shipped permissions as a
//! single test server, so each service connects with its own identity.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::servers::{free_port, nats_server_binary, wait_for_port, Guarded, NatsUsers, Role};

/// One node's fixed identity.
struct Node {
    name: String,
    client_port: u16,
    config: PathBuf,
    log: PathBuf,
    process: Option<Guarded>,
}

/// Three JetStream nodes forming one cluster.
pub struct NatsCluster {
    pub dir: tempfile::TempDir,
    pub users: NatsUsers,
    nodes: Vec<Node>,
}

impl NatsCluster {
    pub const SIZE: usize = 3;

    /// Starts the cluster with `users` and waits until JetStream has a
    /// meta leader.
    pub async fn start(users: NatsUsers) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("giftcard-nats-cluster")
            .tempdir()
            .expect("tempdir");
        let ports: Vec<(u16, u16)> = (0..Self::SIZE)
            .map(|_| (free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route)| format!("\"nats-route://127.0.0.1:{route}\""))
            .collect();
        let accounts = users.install(dir.path());
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, &(client_port, route_port))| {
                let name = format!("n{i}");
                let config = dir.path().join(format!("{name}.conf"));
                std::fs::write(
                    &config,
                    node_config(&name, client_port, route_port, &routes, dir.path()) + &accounts,
                )
                .expect("write node config");
                Node {
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    client_port,
                    config,
                    process: None,
                }
            })
            .collect();
        let mut cluster = Self { dir, users, nodes };
        for i in 0..Self::SIZE {
            cluster.restart(i);
        }
        cluster.wait_for_jetstream(Duration::from_secs(60)).await;
        cluster
    }

    /// Every node's client URL, comma-separated (what `NATS_URL` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Connects to the cluster as `role`.
    pub async fn connect(&self, role: Role) -> async_nats::Client {
        self.users.connect(&self.urls(), role).await
    }

    /// The node named `name` (`n0`…), as an index.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].process.is_some()
    }

    /// SIGKILLs node `i` (no goodbye to the cluster).
    pub fn kill(&mut self, i: usize) {
        if let Some(p) = self.nodes[i].process.take() {
            p.signal("KILL");
            drop(p);
        }
    }

    /// (Re)starts node `i` with its configuration and store; waits for its
    /// client port.
    pub fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.process = None;
        let args = vec!["-c".to_owned(), node.config.to_string_lossy().into_owned()];
        node.process = Some(Guarded::spawn(
            &nats_server_binary(),
            &args,
            None,
            &node.log,
        ));
        wait_for_port(node.client_port, "a NATS cluster node", &node.log);
    }

    /// The JetStream leader of `stream`, as a node index (None while there
    /// is none or the cluster cannot say).
    pub async fn stream_leader(
        &self,
        js: &async_nats::jetstream::Context,
        stream: &str,
    ) -> Option<usize> {
        let mut s = js.get_stream(stream).await.ok()?;
        let info = s.info().await.ok()?;
        let leader = info.cluster.as_ref()?.leader.clone()?;
        self.index_of(&leader)
    }

    /// Waits until the cluster answers JetStream account requests (a meta
    /// leader is elected).
    pub async fn wait_for_jetstream(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let settings = self.users.settings(&self.urls(), Role::Test);
            let identity = giftcard_shared::nats::Identity {
                name: Role::Test.user(),
                inbox_prefix: "_INBOX",
            };
            if let Ok(client) = giftcard_shared::nats::connect(&settings, identity).await {
                let js = async_nats::jetstream::new(client);
                if js.query_account().await.is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the NATS cluster has no JetStream meta leader after {within:?}; logs in {}",
                self.dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn node_config(name: &str, client: u16, route: u16, routes: &[String], dir: &Path) -> String {
    let store = dir.join(name);
    format!(
        r#"server_name: "{name}"
listen: "127.0.0.1:{client}"
jetstream {{
  store_dir: "{store}"
  max_memory_store: 64MB
  max_file_store: 2GB
}}
cluster {{
  name: "giftcard-test"
  listen: "127.0.0.1:{route}"
  routes: [{routes}]
}}
"#,
        store = store.display(),
        routes = routes.join(", "),
    )
}
