//! Processes: the `trust-proxy` binary and outside tools (Python, openssl, curl), the
//! repository root and the venv, commands run to completion, and long-running children
//! (an authority, any server that prints `listening on`) killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `trust-proxy` binary cargo built for this test run.
pub fn trust_proxy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trust-proxy"))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("proxy/ has a parent")
        .to_owned()
}

/// The venv's Python (made by scripts/test.sh), or `$TRUST_TEST_PYTHON`.
pub fn python() -> Command {
    let path = std::env::var_os("TRUST_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python3"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh (it creates the venv with tests/python/requirements.txt)",
        path.display()
    );
    Command::new(path)
}

/// Runs a command to completion and returns its output; panics if it could not start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Combined stdout and stderr of an output.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A `trust-proxy authority` process on 127.0.0.1:0, killed (SIGKILL) when dropped.
pub struct AuthorityProcess {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

impl AuthorityProcess {
    /// Starts the authority over `state` with the token in `token_file`; returns once it
    /// printed its address (it serves from then on).
    pub fn start(state: &Path, token_file: &Path) -> Self {
        Self::start_with(state, token_file, &[])
    }

    /// As [`Self::start`], with extra arguments (e.g. `--crl-validity 10s`).
    pub fn start_with(state: &Path, token_file: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(state, token_file, extra, &[])
    }

    /// As [`Self::start_with`], with environment variables (e.g. `FAILPOINTS`).
    pub fn start_with_env(
        state: &Path,
        token_file: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        use std::io::BufRead as _;
        let mut child = trust_proxy()
            .envs(env.iter().copied())
            .args(["authority", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state)
            .arg("--bootstrap-token-file")
            .arg(token_file)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start trust-proxy authority");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Self {
            child,
            url: format!("http://{addr}"),
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait for the authority")
    }
}

impl Drop for AuthorityProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed (SIGKILL) and reaped when dropped, whose stdout lines
/// `<what> listening on <addr>` tell where it serves; stderr goes to `log`.
pub struct Served {
    /// The process.
    pub child: std::process::Child,
    /// `what` -> address, from the stdout lines.
    pub addrs: std::collections::HashMap<String, String>,
    /// Its stderr.
    pub log: PathBuf,
}

impl Served {
    /// Spawns `cmd` and reads stdout until every name in `wait_for` has printed its
    /// `listening on` line (a bare `listening on` counts as `""`).
    pub fn spawn(mut cmd: Command, log: PathBuf, wait_for: &[&str]) -> Self {
        use std::io::BufRead as _;
        let err = std::fs::File::create(&log).unwrap();
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut reader = std::io::BufReader::new(stdout);
        let mut addrs = std::collections::HashMap::new();
        while !wait_for.iter().all(|w| addrs.contains_key(*w)) {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "{cmd:?} stopped before serving ({status:?}); its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if let Some((what, addr)) = line.trim().split_once("listening on ") {
                addrs.insert(what.trim().to_owned(), addr.trim().to_owned());
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        Self { child, addrs, log }
    }

    /// The address `what` printed.
    pub fn addr(&self, what: &str) -> &str {
        self.addrs
            .get(what)
            .unwrap_or_else(|| panic!("no `{what} listening on` line"))
    }

    /// The stderr so far (for assertion messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
