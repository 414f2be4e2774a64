//! A private PostgreSQL cluster run with the machine's own server binaries (`initdb`, `pg_ctl`), for
//! `ordersync demo` and the test suite when no `DATABASE_URL` is given.
//!
//! The cluster lives in a data directory: created on first use, reused afterwards. It listens on
//! 127.0.0.1 on a free port and on a Unix socket inside the data directory. PostgreSQL refuses to run as
//! root, so when ordersync runs as root the cluster is owned by and run as the `postgres` user (which
//! Debian's packages create).

use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why the cluster could not be created or started.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedPgError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH or under /usr/lib/postgresql/*/bin; install PostgreSQL or set DATABASE_URL"
    )]
    BinariesNotFound,
    #[error(
        "running as root, but there is no `postgres` user to run the cluster as; set DATABASE_URL"
    )]
    NoServiceUser,
    #[error("`{command}` failed: {output}")]
    Command { command: String, output: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running private cluster. It is stopped by [`Cluster::stop`] or when dropped.
#[derive(Debug)]
pub struct Cluster {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    run_as: Option<String>,
    stopped: bool,
}

impl Cluster {
    /// Starts the cluster in `data_dir`, creating it first if the directory holds none.
    pub fn start(data_dir: &Path) -> Result<Cluster, EmbeddedPgError> {
        let bin_dir = find_bin_dir().ok_or(EmbeddedPgError::BinariesNotFound)?;
        let run_as = if is_root() {
            Some(service_user()?)
        } else {
            None
        };
        std::fs::create_dir_all(data_dir).map_err(|source| EmbeddedPgError::Io {
            context: format!("cannot create {}", data_dir.display()),
            source,
        })?;
        let data_dir = data_dir
            .canonicalize()
            .map_err(|source| EmbeddedPgError::Io {
                context: format!("cannot resolve {}", data_dir.display()),
                source,
            })?;
        if let Some(user) = &run_as {
            run(Command::new("chown").arg("-R").arg(user).arg(&data_dir))?;
        }
        let cluster = Cluster {
            bin_dir,
            data_dir,
            port: free_port()?,
            run_as,
            stopped: false,
        };
        if !cluster.data_dir.join("PG_VERSION").exists() {
            run(&mut cluster.command(
                "initdb",
                [
                    OsStr::new("-D"),
                    cluster.data_dir.as_os_str(),
                    OsStr::new("-U"),
                    OsStr::new("postgres"),
                    OsStr::new("-A"),
                    OsStr::new("trust"),
                    OsStr::new("-E"),
                    OsStr::new("UTF8"),
                    OsStr::new("--no-instructions"),
                ],
            ))?;
        }
        // A cluster left running by a process that was killed is stopped first: its port is unknown.
        if cluster.data_dir.join("postmaster.pid").exists() {
            let _ = run(&mut cluster.pg_ctl(&["stop", "-m", "fast"]));
        }
        cluster.pg_start()?;
        Ok(cluster)
    }

    /// Stops the server if it runs and starts it again on the same port and data directory, as an
    /// operator restarting PostgreSQL would: URLs handed out before stay valid.
    pub fn restart(&mut self) -> Result<(), EmbeddedPgError> {
        self.stop()?;
        self.pg_start()?;
        self.stopped = false;
        Ok(())
    }

    fn pg_start(&self) -> Result<(), EmbeddedPgError> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' -c fsync=off -c max_connections=200",
            self.port,
            self.data_dir.display()
        );
        let log = self.data_dir.join("server.log");
        run(&mut self.pg_ctl(&[
            "start",
            "-w",
            "-t",
            "60",
            "-l",
            &log.display().to_string(),
            "-o",
            &options,
        ]))
    }

    /// The URL of the `postgres` database of this cluster.
    pub fn admin_url(&self) -> String {
        self.url("postgres")
    }

    /// The URL of a database of this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the server (fast shutdown: connections are closed, committed data is kept).
    pub fn stop(&mut self) -> Result<(), EmbeddedPgError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        run(&mut self.pg_ctl(&["stop", "-m", "fast", "-w"]))
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut full: Vec<&OsStr> = vec![OsStr::new("-D"), self.data_dir.as_os_str()];
        full.extend(args.iter().map(OsStr::new));
        self.command("pg_ctl", full)
    }

    fn command<'a>(&self, program: &str, args: impl IntoIterator<Item = &'a OsStr>) -> Command {
        let program = self.bin_dir.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(program);
                c
            }
            None => Command::new(program),
        };
        command.args(args).current_dir("/");
        command
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("ordersync: could not stop the embedded PostgreSQL: {e}");
        }
    }
}

fn run(command: &mut Command) -> Result<(), EmbeddedPgError> {
    let described = format!("{command:?}");
    let output = command.output().map_err(|source| EmbeddedPgError::Io {
        context: format!("cannot run {described}"),
        source,
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(EmbeddedPgError::Command {
            command: described,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

/// The directory holding `initdb` and `pg_ctl`: on PATH, else the newest Debian/Ubuntu install.
fn find_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    });
    if let Some(dir) = on_path {
        // Debian puts wrappers on PATH that are links into the versioned directory.
        return Some(
            dir.join("initdb")
                .canonicalize()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or(dir),
        );
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn service_user() -> Result<String, EmbeddedPgError> {
    let found = Command::new("id")
        .arg("-u")
        .arg("postgres")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if found {
        Ok("postgres".to_owned())
    } else {
        Err(EmbeddedPgError::NoServiceUser)
    }
}

fn free_port() -> Result<u16, EmbeddedPgError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|source| EmbeddedPgError::Io {
        context: "cannot find a free port".to_owned(),
        source,
    })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| EmbeddedPgError::Io {
            context: "cannot find a free port".to_owned(),
            source,
        })
}
