//! A private apt view of one Debian suite, kept under `.cache/vmlab/apt/<suite>`
//! (`<suite>-arm64` for the arm64 guest's packages).
//!
//! The lab needs kernels from suites this machine does not use (bullseye,
//! sid). Adding them to the machine's own sources would change what
//! `apt-get upgrade` does on it, so every apt call here goes through options
//! that point at a private sources list, lists and cache instead. The mirror
//! itself comes from the machine's apt configuration: no host name is written
//! into the repository.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, bail};

use super::arch::Arch;

/// Lists younger than this are reused without `apt-get update` (kernels move
/// slowly; a day keeps repeated runs offline and quick).
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// One archive of the machine's apt configuration: its URI and keyring.
#[derive(Debug, Clone)]
pub struct Archive {
    pub uri: String,
    pub signed_by: Option<String>,
}

/// The machine's Debian mirrors: the main archive and, when configured, the
/// security archive (kernel updates of stable suites are published there).
#[derive(Debug, Clone)]
pub struct Mirror {
    pub main: Archive,
    pub security: Option<Archive>,
}

impl Mirror {
    /// The `deb` line for `suite` (`*-security` suites come from the security
    /// archive); None when the machine has no security archive configured.
    fn deb_line(&self, suite: &str) -> Option<String> {
        let a = if suite.ends_with("-security") { self.security.as_ref()? } else { &self.main };
        let opts = match &a.signed_by {
            Some(k) => format!("[signed-by={k}] "),
            None => String::new(),
        };
        Some(format!("deb {opts}{} {suite} main\n", a.uri))
    }
}

pub fn machine_mirror() -> Result<Mirror> {
    let dir = Path::new("/etc/apt/sources.list.d");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sources"))
        .collect();
    files.sort();
    let mut text = String::new();
    for f in &files {
        text += &std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        text += "\n\n";
    }
    if let Some(m) = parse_sources(&text) {
        return Ok(m);
    }
    bail!(
        "no Debian mirror found: no `URIs:` line (other than security) in {}/*.sources",
        dir.display()
    )
}

/// Parses deb822 stanzas (blank-line separated): the first enabled `Types:
/// deb` URI that is not a security archive is the main mirror; the first one
/// whose suites end in `-security` is the security archive.
fn parse_sources(text: &str) -> Option<Mirror> {
    let mut main = None;
    let mut security = None;
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
            })
        };
        let Some(uris) = field("URIs") else { continue };
        if field("Enabled").is_some_and(|v| v.eq_ignore_ascii_case("no")) {
            continue;
        }
        if !field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb")) {
            continue;
        }
        let is_security = field("Suites").is_some_and(|s| s.split_whitespace().any(|s| s.ends_with("-security")));
        let Some(uri) = uris.split_whitespace().next() else { continue };
        let archive = Archive { uri: uri.to_string(), signed_by: field("Signed-By") };
        if is_security {
            security.get_or_insert(archive);
        } else if !uri.contains("security") {
            main.get_or_insert(archive);
        }
    }
    Some(Mirror { main: main?, security })
}

/// apt restricted to a few suites through private state.
pub struct PrivateApt {
    dir: PathBuf,
    pub suite: String,
    /// Another architecture made this view's only one (see `command`).
    foreign: Option<&'static str>,
}

impl PrivateApt {
    /// Prepares `<cache>/apt/<first suite>` for `suites` and updates its lists
    /// when missing or old. A guest of another architecture than this
    /// machine's gets a view of its own, `<first suite>-<arch>`.
    pub fn open(cache: &Path, suites: &[&str], arch: Arch) -> Result<Self> {
        let mirror = machine_mirror()?;
        let suite = suites.first().context("no suite")?.to_string();
        let foreign = (!arch.is_host()).then(|| arch.debian());
        let dir = cache.join("apt").join(match foreign {
            Some(a) => format!("{suite}-{a}"),
            None => suite.clone(),
        });
        for sub in ["lists/partial", "cache/archives/partial", "parts"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        // A security suite is skipped when the machine has no security archive.
        let list: String = suites.iter().filter_map(|s| mirror.deb_line(s)).collect();
        let list_path = dir.join("sources.list");
        let changed = std::fs::read_to_string(&list_path).ok().as_deref() != Some(list.as_str());
        if changed {
            std::fs::write(&list_path, &list).with_context(|| format!("cannot write {}", list_path.display()))?;
        }
        let apt = PrivateApt { dir, suite: suites.join("+"), foreign };
        let suite = &apt.suite;
        if changed || apt.lists_age().is_none_or(|a| a > LISTS_MAX_AGE) {
            eprintln!("xtask vm: apt-get update for suite {suite} (private lists)");
            let out = apt.command("apt-get").args(["update", "-q"]).output().context("cannot run apt-get")?;
            if !out.status.success() {
                bail!(
                    "apt-get update for suite {suite} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            if apt.lists_age().is_none() {
                bail!("apt-get update for suite {suite} left no package lists in {}", apt.dir.display());
            }
        }
        Ok(apt)
    }

    /// Age of the newest `*Packages*` list, None when there is none.
    fn lists_age(&self) -> Option<Duration> {
        std::fs::read_dir(self.dir.join("lists"))
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("_Packages"))
            .filter_map(|e| e.metadata().ok()?.modified().ok())
            .max()
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
    }

    /// `apt-get`/`apt-cache` with every state path pointed at the private dir.
    pub fn command(&self, program: &str) -> Command {
        let d = self.dir.display();
        let mut c = Command::new(program);
        c.arg(format!("-o=Dir::Etc::SourceList={d}/sources.list"))
            .arg(format!("-o=Dir::Etc::SourceParts={d}/parts"))
            .arg(format!("-o=Dir::State::Lists={d}/lists"))
            .arg(format!("-o=Dir::Cache={d}/cache"))
            // The lab cache is root's; apt's _apt sandbox user could not write it.
            .arg("-o=APT::Sandbox::User=root")
            .env("LC_ALL", "C");
        // A foreign architecture as the view's native and only one: its lists
        // alone are fetched and plain names (`apt-get download nfs-common`,
        // `apt-cache pkgnames`) mean its packages. Nothing is installed
        // through this view, so the machine's dpkg never sees them.
        if let Some(a) = self.foreign {
            c.arg(format!("-o=APT::Architecture={a}")).arg(format!("-o=APT::Architectures={a}"));
        }
        c
    }

    /// Every package name in this suite that starts with `prefix`.
    pub fn names_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let out = self
            .command("apt-cache")
            .args(["pkgnames", prefix])
            .output()
            .context("cannot run apt-cache")?;
        if !out.status.success() {
            bail!("apt-cache pkgnames {prefix} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect())
    }

    /// Downloads `pkg` (this suite's candidate) into `dest`, returning the .deb.
    /// Skips the download when a .deb of that package is already there.
    pub fn download(&self, pkg: &str, dest: &Path) -> Result<PathBuf> {
        Ok(self.download_all(&[pkg], dest)?.remove(0))
    }

    /// `download` for several packages, in one apt-get call (each call
    /// costs about a second of reading the lists), in the order given.
    pub fn download_all(&self, pkgs: &[&str], dest: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
        let mut missing = Vec::new();
        for p in pkgs {
            if find_deb(dest, p)?.is_none() {
                missing.push(*p);
            }
        }
        if !missing.is_empty() {
            let list = missing.join(" ");
            eprintln!("xtask vm: downloading {list} ({})", self.suite);
            let out = self
                .command("apt-get")
                .args(["download", "-q"])
                .args(&missing)
                .current_dir(dest)
                .output()
                .context("cannot run apt-get download")?;
            if !out.status.success() {
                bail!("apt-get download {list} ({}) failed: {}", self.suite, String::from_utf8_lossy(&out.stderr).trim());
            }
        }
        pkgs.iter()
            .map(|p| find_deb(dest, p)?.with_context(|| format!("apt-get download {p} left no .deb in {}", dest.display())))
            .collect()
    }
}

/// `<pkg>_<version>_<arch>.deb` in `dir`.
fn find_deb(dir: &Path, pkg: &str) -> Result<Option<PathBuf>> {
    let want = format!("{pkg}_");
    Ok(std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy())
                .is_some_and(|n| n.starts_with(&want) && n.ends_with(".deb"))
        }))
}

/// `dpkg-deb -f <deb> <field>`.
pub fn deb_field(deb: &Path, field: &str) -> Result<String> {
    let out = Command::new("dpkg-deb").arg("-f").arg(deb).arg(field).output().context("cannot run dpkg-deb")?;
    if !out.status.success() {
        bail!("dpkg-deb -f {} {field} failed: {}", deb.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Unpacks a .deb's files under `root`.
pub fn extract(deb: &Path, root: &Path) -> Result<()> {
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    crate::cmd::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_non_security_deb_stanza() {
        let text = "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: x-security\n\n\
                    Types: deb-src\nURIs: http://src.invalid/debian\n\n\
                    Types: deb\n# comment\nURIs: http://mirror.invalid/debian\nSuites: x\n\
                    Signed-By: /usr/share/keyrings/k.gpg\n";
        let m = parse_sources(text).unwrap();
        assert_eq!(m.main.uri, "http://mirror.invalid/debian");
        assert_eq!(m.main.signed_by.as_deref(), Some("/usr/share/keyrings/k.gpg"));
        assert_eq!(m.security.as_ref().unwrap().uri, "http://mirror.invalid/debian-security");
        let line = m.deb_line("bullseye").unwrap();
        assert_eq!(line, "deb [signed-by=/usr/share/keyrings/k.gpg] http://mirror.invalid/debian bullseye main\n");
    }

    #[test]
    fn no_mirror_in_security_only_sources() {
        assert!(parse_sources("Types: deb\nURIs: http://m.invalid/debian-security\nSuites: x-security\n").is_none());
    }
}
