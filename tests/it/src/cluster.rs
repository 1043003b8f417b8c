//! A private, throwaway PostgreSQL 15 cluster for the tests that crash the server (SIGKILL of a
//! backend makes the postmaster reinitialise every session of its cluster; `pg_ctl stop -m
//! immediate` stops all of them): never the shared dev cluster.
//!
//! initdb runs as `postgres` (PostgreSQL refuses root) through `runuser`, the data directory is
//! under /tmp, the port is a free one, and `voxanne_ext` comes from the system installation.
//! Dropping the value stops the cluster (immediate) and removes its directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Config, NoTls};

/// The PostgreSQL 15 binaries: `VOXANNE_PG_BIN`, or Debian's. bin/mutations points it at a
/// private copy of the installation, so a mutated build never replaces the system's.
pub fn pg_bin() -> String {
    std::env::var("VOXANNE_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into())
}

pub struct PrivateCluster {
    pub dir: PathBuf,
    pub data: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    pub dbname: String,
    running: bool,
}

fn as_postgres(args: &[&str]) -> Output {
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("runuser {args:?}: {e}"));
    output
}

fn ok(args: &[&str]) -> String {
    let out = as_postgres(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl PrivateCluster {
    /// initdb, start, and create database `vx` with `voxanne_ext`.
    pub async fn create(tag: &str) -> Self {
        let dir = PathBuf::from(format!("/tmp/voxanne-it-{tag}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let status = Command::new("chown").args(["postgres:", dir.to_str().unwrap()]).status().expect("chown");
        assert!(status.success(), "chown {}", dir.display());
        let data = dir.join("data");
        let log = dir.join("postgres.log");
        let port = crate::relay::free_port();
        ok(&[
            &format!("{}/initdb", pg_bin()),
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--auth=trust",
            "--no-sync",
        ]);
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             max_connections = 60\nshared_buffers = 32MB\nlog_min_messages = warning\n\
             restart_after_crash = on\n",
            dir.display()
        );
        let mut existing = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        existing.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), existing).unwrap();
        let mut me = Self { dir, data, port, log, dbname: "vx".into(), running: false };
        me.start();
        let admin = me.connect_db("postgres").await;
        admin.batch_execute("CREATE DATABASE vx").await.expect("CREATE DATABASE vx");
        let db = me.connect().await;
        db.batch_execute("CREATE EXTENSION voxanne_ext").await.expect("CREATE EXTENSION voxanne_ext");
        me
    }

    pub fn url_for(&self, dbname: &str) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname={dbname} connect_timeout=5", self.port)
    }

    /// libpq key=value connection string of database `vx`.
    pub fn url(&self) -> String {
        self.url_for(&self.dbname)
    }

    pub fn config(&self) -> Config {
        self.url().parse().expect("connection string")
    }

    pub async fn connect_db(&self, dbname: &str) -> Client {
        let (client, connection) = tokio_postgres::connect(&self.url_for(dbname), NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to the private cluster: {e}"));
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    pub async fn connect(&self) -> Client {
        self.connect_db(&self.dbname.clone()).await
    }

    /// Connect, retrying while the server restarts or recovers (bounded).
    pub async fn connect_when_up(&self) -> Client {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match tokio_postgres::connect(&self.url(), NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    if client.simple_query("SELECT 1").await.is_ok() {
                        return client;
                    }
                }
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "the private cluster did not come back within 60 s: {e}\n{}",
                        self.log_tail(40)
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn start(&mut self) {
        ok(&[
            &format!("{}/pg_ctl", pg_bin()),
            "-D",
            self.data.to_str().unwrap(),
            "-l",
            self.log.to_str().unwrap(),
            "-w",
            "-t",
            "120",
            "start",
        ]);
        self.running = true;
    }

    /// `pg_ctl stop -m immediate`: every process quits at once, no checkpoint; the next start
    /// runs crash recovery from the WAL.
    pub fn stop_immediate(&mut self) {
        self.stop("immediate");
    }

    /// A clean stop: sessions are ended, a shutdown checkpoint written.
    pub fn stop_fast(&mut self) {
        self.stop("fast");
    }

    fn stop(&mut self, mode: &str) {
        ok(&[&format!("{}/pg_ctl", pg_bin()), "-D", self.data.to_str().unwrap(), "-m", mode, "-w", "stop"]);
        self.running = false;
    }

    /// SIGKILL one backend of this cluster (never the dev cluster's), and prove it happened:
    /// the process is gone, and the postmaster logged that it died of signal 9 and reset every
    /// session (its crash recovery), all within bounded time.
    pub async fn kill9(&self, pid: i32) {
        let status = Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill -9");
        assert!(status.success(), "kill -9 {pid}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let died = format!("(PID {pid}) was terminated by signal 9");
        loop {
            let gone = !Path::new(&format!("/proc/{pid}")).exists();
            let log = self.log_text();
            let recovered = log.lines().skip_while(|l| !l.contains(&died)).any(|l| l.contains("reinitializing"));
            if gone && recovered {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "backend {pid}: gone {gone}, its death and the reinitialisation logged {recovered}, 30 s after kill -9"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The server log. Unreadable is a failure, not an empty log: a crash check that reads
    /// nothing would report zero crashes.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| panic!("server log {}: {e}", self.log.display()))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// How often the server started with crash recovery ("not properly shut down"): the proof
    /// that an immediate shutdown really left the cluster as a crash does.
    pub fn crash_recoveries(&self) -> usize {
        self.log_text().lines().filter(|l| l.contains("automatic recovery in progress")).count()
    }

    /// Lines of the server log reporting a backend that died of a signal other than the ones
    /// the test sent (SIGKILL), or a PANIC: a crash of the product.
    pub fn unexpected_crashes(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| {
                (l.contains("was terminated by signal") && !l.contains("signal 9"))
                    || l.contains("PANIC:")
                    || (l.contains("terminated by exception"))
            })
            .map(str::to_string)
            .collect()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = as_postgres(&[
                &format!("{}/pg_ctl", pg_bin()),
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ]);
        }
        if std::env::var_os("VOXANNE_KEEP_CLUSTER").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("kept the private cluster in {}", self.dir.display());
        }
    }
}
