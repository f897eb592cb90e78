//! Real NATS and PostgreSQL servers for tests, on free ports.
//!
//! Every server runs under a tiny `sh` guardian that kills it when the
//! guardian's stdin closes, so servers die with the test process even if it
//! aborts. A missing binary is a failure that says what to run.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A server process under a guardian; killed (and reaped) on drop.
pub struct Guarded {
    guardian: Child,
    /// The server's own pid (for signals in fault tests).
    pub pid: u32,
}

impl Guarded {
    /// Starts `program args…`; `as_user` runs it through `runuser`.
    pub fn spawn(program: &Path, args: &[String], as_user: Option<&str>, log: &Path) -> Self {
        Self::spawn_with_env(program, args, as_user, log, &[])
    }

    /// Like [`Guarded::spawn`], with extra environment variables.
    pub fn spawn_with_env(
        program: &Path,
        args: &[String],
        as_user: Option<&str>,
        log: &Path,
        env: &[(String, String)],
    ) -> Self {
        // Appended to: a restarted process's log follows its earlier runs'.
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the server log");
        let mut cmd = Command::new("sh");
        // The guardian starts the server, prints its pid, and kills it
        // (SIGINT, then SIGKILL) when stdin closes.
        cmd.arg("-c").arg(
            r#""$@" 1>&2 & child=$!; echo "$child"; read _unused; kill -INT "$child" 2>/dev/null; 
               for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
                 kill -0 "$child" 2>/dev/null || exit 0; sleep 0.1; done; kill -KILL "$child" 2>/dev/null; wait"#,
        );
        cmd.arg("guardian");
        if let Some(user) = as_user {
            // setpriv execs (runuser would fork), so the pid is the server's.
            cmd.args([
                "setpriv",
                &format!("--reuid={user}"),
                &format!("--regid={user}"),
                "--init-groups",
                "--",
            ]);
        }
        cmd.arg(program).args(args);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let mut guardian = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let mut line = String::new();
        BufReader::new(guardian.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("guardian pid");
        let pid: u32 = line.trim().parse().expect("guardian printed a pid");
        Self { guardian, pid }
    }

    /// Sends `signal` (e.g. "KILL", "STOP", "CONT") to the server.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid.to_string()])
            .status();
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.guardian.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = self.guardian.wait();
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// Waits up to 30 s for `port` to accept connections; panics with the
/// tail of `what`'s `log` otherwise.
pub fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let tail = std::fs::read_to_string(log).unwrap_or_default();
    panic!("{what} did not open port {port} within 30 s; its log:\n{tail}");
}

/// The pinned nats-server binary.
pub fn nats_server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("GIFTCARD_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let local = repo_root().join(".tools/bin/nats-server");
    if local.exists() {
        return local;
    }
    panic!(
        "nats-server (>= 2.12) not found: run `./scripts/install-nats.sh` (or `./scripts/test.sh`, \
         which does it), or set GIFTCARD_NATS_SERVER to its path"
    );
}

/// Who connects to a test NATS server. The service identities have exactly
/// the permissions shipped in `deploy/nats/permissions.conf`; `Test` is the
/// harness's own unrestricted user (inspection, fault injection) and
/// `Intruder` holds what a leaked credential might: publish to
/// `purchases.>`, subscribe to `_INBOX.>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Api,
    Worker,
    Provisioner,
    Operator,
    Test,
    Intruder,
}

impl Role {
    /// The NATS user name.
    pub fn user(self) -> &'static str {
        match self {
            Role::Api => "giftcard-api",
            Role::Worker => "giftcard-worker",
            Role::Provisioner => "giftcard-provisioner",
            Role::Operator => "giftcard-operator",
            Role::Test => "giftcard-test",
            Role::Intruder => "intruder",
        }
    }

    /// The identity (inbox prefix) the services connect with.
    fn identity(self) -> giftcard_shared::nats::Identity {
        use giftcard_shared::nats::{Identity, API, PROVISIONER, WORKER};
        match self {
            Role::Api => API,
            Role::Worker => WORKER,
            Role::Provisioner => PROVISIONER,
            _ => Identity {
                name: self.user(),
                inbox_prefix: "_INBOX",
            },
        }
    }
}

/// The users of one test NATS server (or cluster) and their passwords.
#[derive(Debug, Clone)]
pub struct NatsUsers {
    secret: String,
}

impl Default for NatsUsers {
    fn default() -> Self {
        Self {
            secret: uuid::Uuid::new_v4().simple().to_string(),
        }
    }
}

impl NatsUsers {
    pub fn password(&self, role: Role) -> String {
        format!("{}-{}", role.user(), self.secret)
    }

    /// Writes `permissions.conf` (the shipped file) into `dir` and returns
    /// the configuration text that defines the accounts and users: the
    /// `giftcard` account with every [`Role`], the system account apart, no
    /// anonymous access.
    pub fn install(&self, dir: &Path) -> String {
        self.install_with(dir, &[])
    }

    /// Like [`NatsUsers::install`], with `extra` user entries (NATS
    /// configuration syntax) in the giftcard account.
    pub fn install_with(&self, dir: &Path, extra: &[String]) -> String {
        let shipped = repo_root().join("deploy/nats/permissions.conf");
        std::fs::copy(&shipped, dir.join("permissions.conf"))
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", shipped.display()));
        let user = |role: Role, permissions: &str| {
            format!(
                "      {{ user: {}, password: \"{}\"{permissions} }}\n",
                role.user(),
                self.password(role)
            )
        };
        let extra: String = extra.iter().map(|u| format!("      {u}\n")).collect();
        format!(
            "include ./permissions.conf\n\
             accounts {{\n  GIFTCARD {{\n    jetstream: enabled\n    users: [\n{}{}{}{}{}{}{extra}    ]\n  }}\n\
             \x20 SYS {{ users: [ {{ user: sys, password: \"{}\" }} ] }}\n}}\n\
             system_account: SYS\n",
            user(Role::Api, ", permissions: $GIFTCARD_API_PERMISSIONS"),
            user(Role::Worker, ", permissions: $GIFTCARD_WORKER_PERMISSIONS"),
            user(Role::Provisioner, ", permissions: $GIFTCARD_PROVISIONER_PERMISSIONS"),
            user(Role::Operator, ", permissions: $GIFTCARD_OPERATOR_PERMISSIONS"),
            user(Role::Test, ""),
            user(
                Role::Intruder,
                r#", permissions: { publish: ["purchases.>"], subscribe: ["_INBOX.>"] }"#
            ),
            self.secret
        )
    }

    /// Client settings of `role` for the server(s) at `url`.
    pub fn settings(&self, url: &str, role: Role) -> giftcard_shared::config::NatsSettings {
        giftcard_shared::config::NatsSettings::plain(url)
            .with_user(role.user(), self.password(role))
    }

    /// The environment variables that give a service process `role`.
    pub fn env(&self, role: Role) -> Vec<(&'static str, String)> {
        vec![
            ("NATS_USER", role.user().to_owned()),
            ("NATS_PASSWORD", self.password(role)),
        ]
    }

    /// Connects as `role`.
    pub async fn connect(&self, url: &str, role: Role) -> async_nats::Client {
        giftcard_shared::nats::connect(&self.settings(url, role), role.identity())
            .await
            .unwrap_or_else(|e| panic!("connect to test nats as {role:?}: {e}"))
    }
}

/// How a test NATS server is set up beyond authentication, which is always
/// on.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// Serve TLS only (certificates from a private CA made for the server)
    /// and require every client to present a certificate signed by it.
    pub tls: bool,
    /// More users of the giftcard account, in NATS configuration syntax.
    pub extra_users: Vec<String>,
}

/// A private certificate authority and the certificates it signed for a
/// test server and its clients (PEM files).
#[derive(Debug, Clone)]
pub struct TestCa {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestCa {
    /// Makes the CA and the certificates in `dir`.
    pub fn create(dir: &Path) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "giftcard test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let mut p = CertificateParams::new(names).expect("leaf params");
            p.extended_key_usages = vec![usage];
            let key = KeyPair::generate().expect("leaf key");
            let cert = p.signed_by(&key, &issuer).expect("leaf certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            vec!["giftcard-client".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write a PEM file");
            path
        };
        Self {
            ca: write("ca.pem", &ca_cert.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server-key.pem", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client-key.pem", &client_key),
        }
    }
}

/// A JetStream-enabled NATS server with its own store, authentication on.
pub struct NatsServer {
    pub port: u16,
    pub store: tempfile::TempDir,
    pub process: Option<Guarded>,
    pub users: NatsUsers,
    /// The certificates, when the server serves TLS.
    pub tls: Option<TestCa>,
    options: NatsOptions,
}

impl NatsServer {
    pub fn start() -> Self {
        Self::start_with(NatsOptions::default())
    }

    pub fn start_with(options: NatsOptions) -> Self {
        let store = tempfile::tempdir().expect("tempdir");
        let tls = options.tls.then(|| TestCa::create(store.path()));
        let mut s = Self {
            port: free_port(),
            store,
            process: None,
            users: NatsUsers::default(),
            tls,
            options,
        };
        s.write_config();
        s.restart();
        s
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "tls" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Client settings of `role` (with the client certificate under TLS).
    pub fn settings(&self, role: Role) -> giftcard_shared::config::NatsSettings {
        let mut s = self.users.settings(&self.url(), role);
        if let Some(ca) = &self.tls {
            s.tls_ca_file = Some(ca.ca.clone());
            s.tls_cert_file = Some(ca.client_cert.clone());
            s.tls_key_file = Some(ca.client_key.clone());
        }
        s
    }

    /// The environment a service process needs to connect as `role`.
    pub fn env(&self, role: Role) -> Vec<(&'static str, String)> {
        let mut env = self.users.env(role);
        env.push(("NATS_URL", self.url()));
        if let Some(ca) = &self.tls {
            for (var, path) in [
                ("NATS_TLS_CA_FILE", &ca.ca),
                ("NATS_TLS_CERT_FILE", &ca.client_cert),
                ("NATS_TLS_KEY_FILE", &ca.client_key),
            ] {
                env.push((var, path.to_string_lossy().into_owned()));
            }
        }
        env
    }

    /// Connects as `role`.
    pub async fn connect(&self, role: Role) -> async_nats::Client {
        giftcard_shared::nats::connect(&self.settings(role), role.identity())
            .await
            .unwrap_or_else(|e| panic!("connect to test nats as {role:?}: {e}"))
    }

    /// Runs the provisioning step (what `giftcard-migrate nats` does) as
    /// the giftcard-provisioner identity.
    pub async fn provision(&self, topology: &giftcard_shared::topology::TopologyOptions) {
        let js = async_nats::jetstream::new(self.connect(Role::Provisioner).await);
        giftcard_shared::topology::provision(&js, topology)
            .await
            .expect("provision the NATS topology");
    }

    /// The configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.store.path().join("nats.conf")
    }

    fn write_config(&self) {
        let store = self.store.path().join("js");
        let tls = match &self.tls {
            Some(ca) => format!(
                "tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify: true }}\n",
                ca.server_cert.display(),
                ca.server_key.display(),
                ca.ca.display()
            ),
            None => String::new(),
        };
        let config = format!(
            "host: 127.0.0.1\nport: {}\njetstream {{ store_dir: \"{}\" }}\n{tls}{}",
            self.port,
            store.display(),
            self.users
                .install_with(self.store.path(), &self.options.extra_users)
        );
        std::fs::write(self.config_path(), config).expect("write nats.conf");
    }

    /// (Re)starts the server on the same port and store.
    pub fn restart(&mut self) {
        self.process = None;
        let log = self.store.path().join("nats.log");
        let args = vec![
            "-c".to_owned(),
            self.config_path().to_string_lossy().into_owned(),
        ];
        self.process = Some(Guarded::spawn(&nats_server_binary(), &args, None, &log));
        wait_for_port(self.port, "nats-server", &log);
    }

    /// Stops the server (graceful).
    pub fn stop(&mut self) {
        self.process = None;
    }
}

fn pg_bindir() -> PathBuf {
    if let Ok(p) = std::env::var("GIFTCARD_PG_BIN") {
        return PathBuf::from(p);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries (initdb, postgres) not found: install them \
             (`apt-get install postgresql-15`) or set GIFTCARD_PG_BIN to their directory"
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A private PostgreSQL cluster.
pub struct PgCluster {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub process: Option<Guarded>,
    bindir: PathBuf,
    user: Option<&'static str>,
    durable: bool,
}

impl PgCluster {
    /// A cluster for tests: no fsync (they survive process kills, not
    /// machine crashes), every lock wait logged.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A cluster with PostgreSQL's default durability, for benchmarks.
    pub fn start_durable() -> Self {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Self {
        let bindir = pg_bindir();
        let dir = tempfile::Builder::new()
            .prefix("giftcard-pg")
            .tempdir()
            .expect("tempdir");
        let user = is_root().then_some("postgres");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        if let Some(u) = user {
            let _ = Command::new("chmod")
                .args(["755", &dir.path().to_string_lossy()])
                .status();
            let status = Command::new("chown")
                .args([&format!("{u}:{u}"), &data.to_string_lossy().to_string()])
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "cannot chown the PostgreSQL data dir to {u}"
            );
        }
        let mut initdb = match user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(bindir.join("initdb"));
                c
            }
            None => Command::new(bindir.join("initdb")),
        };
        let out = initdb
            .args([
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut c = Self {
            port: free_port(),
            dir,
            process: None,
            bindir,
            user,
            durable,
        };
        c.restart();
        c
    }

    pub fn restart(&mut self) {
        self.process = None;
        let data = self.dir.path().join("data");
        let mut args: Vec<String> = vec![
            "-D".into(),
            data.to_string_lossy().into(),
            "-p".into(),
            self.port.to_string(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            "-c".into(),
            "unix_socket_directories=".into(),
            "-c".into(),
            "max_connections=400".into(),
            // Invariant 5 evidence: every lock wait over 5 ms is logged,
            // with the database it happened in.
            "-c".into(),
            "log_lock_waits=on".into(),
            "-c".into(),
            "deadlock_timeout=5ms".into(),
            "-c".into(),
            "log_line_prefix=db=%d ".into(),
        ];
        if !self.durable {
            // Tests survive process kills, not machine crashes: skip fsync.
            args.extend(["-c".into(), "fsync=off".into()]);
        }
        let log = self.dir.path().join("postgres.log");
        self.process = Some(Guarded::spawn(
            &self.bindir.join("postgres"),
            &args,
            self.user,
            &log,
        ));
        wait_for_port(self.port, "postgres", &log);
    }

    pub fn stop(&mut self) {
        self.process = None;
    }

    /// The server log (lock waits, errors).
    pub fn log(&self) -> std::path::PathBuf {
        self.dir.path().join("postgres.log")
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

/// The cluster shared by every test of this process (or the one named by
/// `GIFTCARD_TEST_DATABASE_URL`, an admin URL): each test gets its own
/// database.
pub fn shared_pg_admin_url() -> String {
    match std::env::var("GIFTCARD_TEST_DATABASE_URL") {
        Ok(u) => u,
        Err(_) => shared_cluster().url("postgres"),
    }
}

fn shared_cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(PgCluster::start)
}

/// Lines of the PostgreSQL log about lock waits in database `db` (None when
/// the cluster is not the harness's own).
pub fn lock_waits_in(db: &str, own: Option<&PgCluster>) -> Option<Vec<String>> {
    let log = match own {
        Some(c) => c.log(),
        None if std::env::var("GIFTCARD_TEST_DATABASE_URL").is_ok() => return None,
        None => shared_cluster().log(),
    };
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let prefix = format!("db={db} ");
    Some(
        text.lines()
            .filter(|l| {
                l.starts_with(&prefix)
                    && (l.contains("still waiting for") || l.contains("deadlock"))
            })
            .map(str::to_owned)
            .collect(),
    )
}
