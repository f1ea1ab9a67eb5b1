//! The guest's architecture (`--arch`): what differs between an x86-64 and
//! an arm64 lab guest. Everything else (the scenarios, the judges) is the same.
use std::{ffi::OsString, path::Path};

/// x86-64 is the host's own; arm64 is emulated (QEMU's `virt` board), its
/// kernel and user space taken from Debian's arm64 packages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    #[value(name = "x86_64", alias = "amd64")]
    X86_64,
    #[value(name = "arm64", alias = "aarch64")]
    Arm64,
}

impl Arch {
    /// Debian's name for it (package architecture, kernel flavour suffix).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The static musl target the guest init and nfs-trace are built for.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::X86_64 => crate::cmd::MUSL_TARGET,
            Arch::Arm64 => crate::dist::arm64::TARGET,
        }
    }

    /// The kernel's serial console: the PC's 16550 or the `virt` board's PL011.
    pub fn console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Arm64 => "ttyAMA0",
        }
    }

    /// Debian's multiarch library directory name.
    pub fn multiarch(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-linux-gnu",
            Arch::Arm64 => "aarch64-linux-gnu",
        }
    }

    /// Whether this machine runs the guest's programs itself (then `ldd` and
    /// the host's own tools serve; otherwise everything comes from packages).
    pub fn is_host(self) -> bool {
        self == Arch::X86_64
    }

    pub fn qemu_binary(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Arm64 => "qemu-system-aarch64",
        }
    }

    /// The machine and CPU. arm64: the `virt` board boots Debian's Image
    /// directly from `-kernel` (its EFI stub is not needed: QEMU passes the
    /// device tree), no firmware. `-cpu max` emulates pointer authentication,
    /// which the kernel uses on every function return; QEMU's architected
    /// QARMA algorithm for it is slow to emulate, `pauth-impdef` is QEMU's own
    /// cheaper hash with the same semantics for the guest. Measured here with
    /// v3-default and v4.1-default on 6.12: 67 s of guest time with plain
    /// `max`, 30 s with it.
    fn machine_args(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &["-accel", "tcg", "-cpu", "max"],
            Arch::Arm64 => &["-machine", "virt", "-accel", "tcg", "-cpu", "max,pauth-impdef=on"],
        }
    }

    /// QEMU's whole command line after the program name.
    pub fn qemu_args(self, o: &QemuArgs) -> Vec<OsString> {
        let mut v: Vec<OsString> = self.machine_args().iter().map(OsString::from).collect();
        v.extend(["-smp", "1", "-nodefaults", "-display", "none", "-no-reboot", "-m"].map(OsString::from));
        v.push(o.memory_mb.to_string().into());
        if o.instruction_clock {
            v.extend(["-icount", "shift=0,sleep=off"].map(OsString::from));
        }
        v.extend(["-serial", "stdio", "-kernel"].map(OsString::from));
        v.push(o.kernel.into());
        v.push("-initrd".into());
        v.push(o.initrd.into());
        v.push("-append".into());
        v.push(o.append.into());
        v
    }
}

/// What `qemu_args` needs from `qemu::Options`.
pub struct QemuArgs<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub append: &'a str,
    pub memory_mb: u32,
    pub instruction_clock: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(arch: Arch, icount: bool) -> Vec<String> {
        let o = QemuArgs { kernel: Path::new("/k"), initrd: Path::new("/i"), append: "console=x a=b", memory_mb: 1024, instruction_clock: icount };
        arch.qemu_args(&o).into_iter().map(|s| s.into_string().unwrap()).collect()
    }

    #[test]
    fn x86_command_line_is_the_labs_original() {
        // Word for word what qemu.rs ran before --arch existed.
        assert_eq!(
            args(Arch::X86_64, false).join(" "),
            "-accel tcg -cpu max -smp 1 -nodefaults -display none -no-reboot -m 1024 -serial stdio -kernel /k -initrd /i -append console=x a=b"
        );
        assert!(args(Arch::X86_64, true).join(" ").contains("-m 1024 -icount shift=0,sleep=off -serial stdio"));
    }

    #[test]
    fn arm64_boots_the_virt_board_directly() {
        let a = args(Arch::Arm64, false);
        assert_eq!(&a[..6], ["-machine", "virt", "-accel", "tcg", "-cpu", "max,pauth-impdef=on"]);
        // No firmware: the kernel and initrd are handed over as they are.
        assert!(!a.iter().any(|s| s == "-bios" || s == "-drive" || s == "-pflash"));
        let k = a.iter().position(|s| s == "-kernel").unwrap();
        assert_eq!(a[k + 1], "/k");
        // The append string stays one argument.
        assert_eq!(a.last().unwrap(), "console=x a=b");
    }

    #[test]
    fn names() {
        assert_eq!(Arch::Arm64.console(), "ttyAMA0");
        assert_eq!(Arch::X86_64.console(), "ttyS0");
        assert_eq!(Arch::Arm64.debian(), "arm64");
        assert_eq!(Arch::Arm64.rust_target(), "aarch64-unknown-linux-musl");
        assert!(Arch::X86_64.is_host() && !Arch::Arm64.is_host());
    }
}
