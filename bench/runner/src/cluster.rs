//! A local 3-node NATS JetStream cluster with the production durability
//! setting, `sync_interval: always` (every write fsynced before it is
//! acknowledged), and the shipped permissions, for the pipeline's R3 run.

use std::path::Path;
use std::time::{Duration, Instant};

use giftcard_tests::servers::{free_port, nats_server_binary, Guarded, NatsUsers};

const NODES: usize = 3;

pub struct NatsCluster {
    nodes: Vec<Guarded>,
    client_ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

/// The ports of one node.
struct Ports {
    client: u16,
    monitor: u16,
    route: u16,
}

/// One node's configuration file; `auth` defines the accounts and users
/// (it includes `permissions.conf`, which sits next to this file).
fn node_config(name: &str, ports: &Ports, routes: &[String], store: &Path, auth: &str) -> String {
    format!(
        r#"server_name: {name}
listen: 127.0.0.1:{client}
http: 127.0.0.1:{monitor}
jetstream {{
  store_dir: "{store}"
  sync_interval: always
}}
cluster {{
  name: giftcard-bench
  listen: 127.0.0.1:{route}
  routes: [{routes}]
}}
{auth}"#,
        client = ports.client,
        monitor = ports.monitor,
        route = ports.route,
        store = store.display(),
        routes = routes.join(", ")
    )
}

impl NatsCluster {
    /// Starts the three nodes, with `users`, and waits until JetStream is
    /// healthy on each.
    pub async fn start(logs: &Path, users: &NatsUsers) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("giftcard-nats-cluster")
            .tempdir()?;
        let ports: Vec<Ports> = (0..NODES)
            .map(|_| Ports {
                client: free_port(),
                monitor: free_port(),
                route: free_port(),
            })
            .collect();
        let mut nodes = Vec::new();
        for (i, own) in ports.iter().enumerate() {
            let name = format!("n{i}");
            let node_dir = dir.path().join(&name);
            std::fs::create_dir_all(node_dir.join("js"))?;
            let routes: Vec<String> = ports
                .iter()
                .filter(|p| p.route != own.route)
                .map(|p| format!("nats-route://127.0.0.1:{}", p.route))
                .collect();
            let auth = users.install(&node_dir);
            let conf = node_dir.join("nats.conf");
            std::fs::write(
                &conf,
                node_config(&name, own, &routes, &node_dir.join("js"), &auth),
            )?;
            nodes.push(Guarded::spawn(
                &nats_server_binary(),
                &["-c".to_owned(), conf.display().to_string()],
                None,
                &logs.join(format!("nats-{name}.log")),
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for p in &ports {
            // 200 once JetStream is up and current with the meta leader.
            let url = format!("http://127.0.0.1:{}/healthz", p.monitor);
            while !reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "the 3-node NATS cluster did not become healthy within 60 s; see {}/nats-n*.log",
                    logs.display()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(Self {
            nodes,
            client_ports: ports.iter().map(|p| p.client).collect(),
            _dir: dir,
        })
    }

    /// `NATS_URL` for clients: every node.
    pub fn urls(&self) -> String {
        self.client_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.pid).collect()
    }
}
