//! Headless Chromium (Debian's `chromium`, installed by `cargo xtask setup`)
//! for the tests of the report page: a screenshot to look at (and check that
//! it shows something), and the DOM as the browser parsed it.
//!
//! Each run gets a fresh profile directory, no sandbox (the tests run as
//! root, where Chromium's sandbox refuses to start), no GPU, and none of the
//! background fetches Chromium makes on its own. A run that takes longer than
//! [`TIMEOUT`] is killed with its whole process group.
use std::{
    collections::HashMap,
    fs,
    io::Cursor,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// One Chromium run may take this long (it takes about a second here).
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The colour scheme the page is asked for (its `prefers-color-scheme`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Theme {
    Light,
    Dark,
}

impl Theme {
    /// Blink's own setting; 0 is dark, 1 is light (Chromium 156 honours it
    /// in headless mode, where `--force-dark-mode` works too).
    fn blink_setting(self) -> &'static str {
        match self {
            Theme::Light => "--blink-settings=preferredColorScheme=1",
            Theme::Dark => "--blink-settings=preferredColorScheme=0",
        }
    }
}

/// The Chromium binary: `chromium` on PATH, else Debian's /usr/bin/chromium.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("chromium");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let p = PathBuf::from("/usr/bin/chromium");
    p.is_file().then_some(p)
}

/// A screenshot of the page at `html` in the light theme, `width` × `height`
/// CSS pixels (the window; what lies below it is not in the picture).
pub fn screenshot(html: &Path, out_png: &Path, width: u32, height: u32) -> Result<()> {
    screenshot_themed(html, out_png, width, height, Theme::Light)
}

/// A screenshot of the page at `html` in `theme`.
pub fn screenshot_themed(html: &Path, out_png: &Path, width: u32, height: u32, theme: Theme) -> Result<()> {
    let out_png = absolute(out_png)?;
    match fs::remove_file(&out_png) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove the old {}", out_png.display())),
    }
    let args = [
        theme.blink_setting().to_string(),
        format!("--screenshot={}", out_png.display()),
        format!("--window-size={width},{height}"),
        "--hide-scrollbars".to_string(),
        file_url(html)?,
    ];
    let run = run(&args)?;
    let len = fs::metadata(&out_png).map(|m| m.len()).unwrap_or(0);
    if len == 0 {
        bail!("chromium wrote no screenshot to {}; its stderr:\n{}", out_png.display(), run.stderr_tail());
    }
    Ok(())
}

/// The page's DOM after Chromium parsed it, serialized (`--dump-dom`).
pub fn dump_dom(html: &Path) -> Result<String> {
    let run = run(&["--dump-dom".to_string(), file_url(html)?])?;
    if run.stdout.trim().is_empty() {
        bail!("chromium dumped no DOM for {}; its stderr:\n{}", html.display(), run.stderr_tail());
    }
    Ok(run.stdout)
}

/// What a screenshot shows, in numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PngStats {
    pub width: u32,
    pub height: u32,
    /// The most common colour (RGBA), taken as the background.
    pub background: [u8; 4],
    /// Pixels of another colour than the background.
    pub differing: usize,
    pub distinct_colours: usize,
}

impl PngStats {
    /// The share of the picture that is not background, 0 to 1.
    pub fn fraction(&self) -> f64 {
        let total = self.width as f64 * self.height as f64;
        if total == 0.0 { 0.0 } else { self.differing as f64 / total }
    }
    /// The background's luminance, 0 (black) to 255 (white).
    pub fn background_luma(&self) -> f64 {
        let [r, g, b, _] = self.background;
        0.2126 * f64::from(r) + 0.7152 * f64::from(g) + 0.0722 * f64::from(b)
    }
}

/// Decodes a PNG and counts the pixels that differ from its most common
/// colour; an error if it cannot be decoded or is all one colour (blank).
pub fn png_not_blank(png: &[u8]) -> Result<PngStats> {
    let mut decoder = png::Decoder::new(Cursor::new(png));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().context("not a PNG")?;
    let size = reader.output_buffer_size().context("PNG too large to decode")?;
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).context("cannot decode the PNG")?;
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => bail!("indexed PNG left unexpanded"),
    };
    let mut counts: HashMap<[u8; 4], usize> = HashMap::new();
    for row in buf.chunks(info.line_size).take(info.height as usize) {
        for px in row[..info.width as usize * channels].chunks_exact(channels) {
            let rgba = match *px {
                [l] => [l, l, l, 255],
                [l, a] => [l, l, l, a],
                [r, g, b] => [r, g, b, 255],
                [r, g, b, a] => [r, g, b, a],
                _ => unreachable!("1 to 4 channels"),
            };
            *counts.entry(rgba).or_default() += 1;
        }
    }
    let Some((&background, &most)) = counts.iter().max_by_key(|&(_, n)| *n) else {
        bail!("the PNG has no pixels");
    };
    let total: usize = counts.values().sum();
    let stats = PngStats {
        width: info.width,
        height: info.height,
        background,
        differing: total - most,
        distinct_colours: counts.len(),
    };
    if stats.differing == 0 {
        bail!("the {}×{} picture is blank: every pixel is {:?}", info.width, info.height, background);
    }
    Ok(stats)
}

/// What one Chromium run printed.
struct Run {
    stdout: String,
    stderr: String,
}

impl Run {
    /// The last lines of stderr: Chromium is chatty (D-Bus, GPU) before it
    /// says what went wrong.
    fn stderr_tail(&self) -> String {
        let lines: Vec<&str> = self.stderr.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// Runs Chromium headless with `args` after the common flags, in a fresh
/// profile; fails on a non-zero exit or after [`TIMEOUT`].
fn run(args: &[String]) -> Result<Run> {
    let bin = binary().context("chromium is not installed: run `cargo xtask setup`")?;
    let dir = scratch_dir()?;
    let result = run_in(&bin, &dir, args);
    let _ = fs::remove_dir_all(&dir);
    result
}

fn run_in(bin: &Path, dir: &Path, args: &[String]) -> Result<Run> {
    let profile = dir.join("profile");
    let stdout_path = dir.join("stdout");
    let stderr_path = dir.join("stderr");
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .stdin(Stdio::null())
    .stdout(fs::File::create(&stdout_path)?)
    .stderr(fs::File::create(&stderr_path)?)
    // Its own process group, so a hung run is killed with its helpers.
    .process_group(0);
    eprintln!("running {cmd:?}");
    let mut child = cmd.spawn().with_context(|| format!("cannot start {}", bin.display()))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > TIMEOUT {
            // SAFETY: kill(2) on the process group of the child we started.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let run = Run {
        stdout: fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: fs::read_to_string(&stderr_path).unwrap_or_default(),
    };
    match status {
        None => bail!("chromium did not finish within {:?} and was killed; its stderr:\n{}", TIMEOUT, run.stderr_tail()),
        Some(s) if !s.success() => bail!("chromium failed ({s}); its stderr:\n{}", run.stderr_tail()),
        Some(_) => Ok(run),
    }
}

/// A new empty directory for one run's profile and output.
fn scratch_dir() -> Result<PathBuf> {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "nfs-trace-chromium-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("cannot make {}", dir.display()))?;
    Ok(dir)
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("no absolute path for {}", p.display()))
}

/// `file://` and the absolute path, every byte outside the unreserved set
/// and `/` percent-encoded.
fn file_url(p: &Path) -> Result<String> {
    use std::os::unix::ffi::OsStrExt as _;
    let p = absolute(p)?;
    let mut url = String::from("file://");
    for &b in p.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_are_percent_encoded() {
        assert_eq!(file_url(Path::new("/tmp/a b/r#1.html")).unwrap(), "file:///tmp/a%20b/r%231.html");
    }

    #[test]
    fn a_blank_png_is_an_error_and_a_drawn_one_counts() {
        fn encode(w: u32, h: u32, px: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            let mut enc = png::Encoder::new(&mut out, w, h);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            enc.write_header().unwrap().write_image_data(px).unwrap();
            out
        }
        let white = vec![255u8; 4 * 4 * 3];
        assert!(png_not_blank(&encode(4, 4, &white)).is_err());
        let mut drawn = white.clone();
        drawn[..6].copy_from_slice(&[0, 0, 0, 10, 20, 30]);
        let s = png_not_blank(&encode(4, 4, &drawn)).unwrap();
        assert_eq!((s.background, s.differing, s.distinct_colours), ([255, 255, 255, 255], 2, 3));
        assert!((s.fraction() - 2.0 / 16.0).abs() < 1e-9);
        assert!(png_not_blank(b"not a png").is_err());
    }
}
