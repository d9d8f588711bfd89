//! Headless Chromium for the dashboard's browser test: the rendered DOM of a page and a
//! screenshot, each from a fresh process with its own profile directory, stopped by its process
//! group's id if it outlives its deadline.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Longest one page load may take, rendering included.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// Virtual time the page gets to run its scripts (fetches, a few polls) before the DOM is taken.
const VIRTUAL_TIME_BUDGET_MS: u32 = 5_000;

/// The Chromium binary, found on PATH.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

pub struct Chromium {
    binary: PathBuf,
    /// Profiles, outputs and logs of every run, one numbered set each.
    dir: PathBuf,
    runs: u32,
}

impl Chromium {
    pub fn new(binary: PathBuf, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Chromium {
            binary,
            dir: dir.to_path_buf(),
            runs: 0,
        })
    }

    /// The page's DOM after its scripts ran for the virtual time budget.
    pub fn dump_dom(&mut self, url: &str) -> anyhow::Result<String> {
        let budget = format!("--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}");
        let output = self.run(url, &["--dump-dom".to_string(), budget])?;
        std::fs::read_to_string(&output).with_context(|| format!("reading {}", output.display()))
    }

    /// Saves a 1280x900 screenshot of the page at `path`.
    pub fn screenshot(&mut self, url: &str, path: &Path) -> anyhow::Result<()> {
        self.run(
            url,
            &[
                format!("--screenshot={}", path.display()),
                format!("--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}"),
                "--window-size=1280,900".to_string(),
                "--hide-scrollbars".to_string(),
            ],
        )?;
        anyhow::ensure!(path.is_file(), "no screenshot at {}", path.display());
        Ok(())
    }

    /// Runs Chromium once on `url`; its stdout goes to the file returned.
    fn run(&mut self, url: &str, args: &[String]) -> anyhow::Result<PathBuf> {
        self.runs += 1;
        let run = self.dir.join(format!("run-{}", self.runs));
        std::fs::create_dir_all(&run)?;
        let stdout = run.join("stdout.html");
        let mut child = Command::new(&self.binary)
            .args([
                "--headless=new",
                "--disable-gpu",
                "--no-sandbox",
                "--no-first-run",
                "--disable-dev-shm-usage",
            ])
            .arg(format!("--user-data-dir={}", run.join("profile").display()))
            .args(args)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout)?)
            .stderr(std::fs::File::create(run.join("stderr.log"))?)
            // Its own process group, so its helpers (zygote, renderer) go with it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let deadline = Instant::now() + CHROMIUM_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                kill_group(child.id());
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "chromium on {url} ran past {CHROMIUM_TIMEOUT:?}; stopped (logs in {})",
                    run.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // Helpers that outlived the browser, if any.
        kill_group(child.id());
        anyhow::ensure!(
            status.success(),
            "chromium on {url}: {status} (logs in {})",
            run.display()
        );
        Ok(stdout)
    }
}

/// SIGKILL to the process group `pgid` (the id of the process that leads it); gone is fine.
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}
