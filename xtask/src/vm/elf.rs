//! Just enough ELF64 (little-endian: every x86-64 and arm64 Debian object)
//! for the guest image: a section's bytes (a module's `.modinfo`), and for
//! programs of another architecture, which `ldd` cannot run, the libraries
//! they load (`DT_NEEDED`), their loader (`.interp`) and their machine.
use anyhow::{Context as _, Result, bail};

/// `e_machine` values.
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;

const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;

fn u16_at(elf: &[u8], o: usize) -> Result<u16> {
    Ok(u16::from_le_bytes(elf.get(o..o + 2).context("truncated ELF")?.try_into().expect("2 bytes")))
}

fn u32_at(elf: &[u8], o: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(elf.get(o..o + 4).context("truncated ELF")?.try_into().expect("4 bytes")))
}

fn u64_at(elf: &[u8], o: usize) -> Result<u64> {
    Ok(u64::from_le_bytes(elf.get(o..o + 8).context("truncated ELF")?.try_into().expect("8 bytes")))
}

fn check_header(elf: &[u8]) -> Result<()> {
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        bail!("not an ELF64 little-endian object");
    }
    Ok(())
}

/// The machine the object is for (`EM_*`).
pub fn machine(elf: &[u8]) -> Result<u16> {
    check_header(elf)?;
    u16_at(elf, 0x12)
}

/// The section named `want`, None when the object has none.
fn find_section<'a>(elf: &'a [u8], want: &str) -> Result<Option<&'a [u8]>> {
    check_header(elf)?;
    let shoff = u64_at(elf, 0x28)? as usize;
    let shentsize = u16_at(elf, 0x3a)? as usize;
    let shnum = u16_at(elf, 0x3c)? as usize;
    let shstrndx = u16_at(elf, 0x3e)? as usize;
    let sh = |i: usize| shoff + i * shentsize;
    let bytes = |i: usize| -> Result<&'a [u8]> {
        let off = u64_at(elf, sh(i) + 0x18)? as usize;
        let size = u64_at(elf, sh(i) + 0x20)? as usize;
        elf.get(off..off + size).context("section outside the file")
    };
    let names = bytes(shstrndx)?;
    for i in 0..shnum {
        let n = u32_at(elf, sh(i))? as usize;
        let name = names.get(n..).and_then(|s| s.split(|b| *b == 0).next()).unwrap_or_default();
        if name == want.as_bytes() {
            return bytes(i).map(Some);
        }
    }
    Ok(None)
}

/// The bytes of the section named `want` (enough ELF to read a .ko file).
pub fn section<'a>(elf: &'a [u8], want: &str) -> Result<&'a [u8]> {
    find_section(elf, want)?.with_context(|| format!("no {want} section"))
}

/// The sonames a program or library loads (`DT_NEEDED`, in order); none
/// for a static program.
pub fn needed(elf: &[u8]) -> Result<Vec<String>> {
    let Some(dynamic) = find_section(elf, ".dynamic")? else { return Ok(Vec::new()) };
    let strtab = section(elf, ".dynstr")?;
    let mut out = Vec::new();
    for entry in dynamic.chunks_exact(16) {
        let (tag, val) = (u64_at(entry, 0)?, u64_at(entry, 8)? as usize);
        match tag {
            DT_NULL => break,
            DT_NEEDED => {
                let name = strtab.get(val..).and_then(|s| s.split(|b| *b == 0).next()).context("DT_NEEDED outside .dynstr")?;
                out.push(String::from_utf8_lossy(name).into_owned());
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The program loader a dynamic program names (`.interp`), None when static.
pub fn interp(elf: &[u8]) -> Result<Option<String>> {
    Ok(find_section(elf, ".interp")?.map(|s| String::from_utf8_lossy(s.split(|b| *b == 0).next().unwrap_or_default()).into_owned()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF64 for `machine` with a NULL section, `.shstrtab` and
    /// the given sections (name, bytes).
    pub(crate) fn tiny_elf(machine: u16, sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut shstr = b"\0.shstrtab\0".to_vec();
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        let mut placed = Vec::new();
        for (name, data) in sections {
            let name_off = shstr.len() as u32;
            shstr.extend_from_slice(name.as_bytes());
            shstr.push(0);
            placed.push((name_off, f.len(), data.len()));
            f.extend_from_slice(data);
        }
        let shstr_off = f.len();
        f.extend_from_slice(&shstr);
        while !f.len().is_multiple_of(8) {
            f.push(0);
        }
        let shoff = f.len();
        let sect = |name: u32, off: usize, size: usize| {
            let mut s = vec![0u8; 64];
            s[..4].copy_from_slice(&name.to_le_bytes());
            s[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            s[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            s
        };
        let mut table = sect(0, 0, 0);
        table.extend(sect(1, shstr_off, shstr.len()));
        for (n, off, size) in &placed {
            table.extend(sect(*n, *off, *size));
        }
        f.extend(table);
        f[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        f[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        f[0x3c..0x3e].copy_from_slice(&(2 + placed.len() as u16).to_le_bytes());
        f[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        f
    }

    fn dynamic(entries: &[(u64, u64)]) -> Vec<u8> {
        entries.iter().flat_map(|(t, v)| t.to_le_bytes().into_iter().chain(v.to_le_bytes())).collect()
    }

    #[test]
    fn reads_needed_interp_and_machine() {
        let dynstr = b"\0libtirpc.so.3\0libc.so.6\0";
        // DT_STRTAB (5) is skipped; DT_NULL ends the list before the junk.
        let dynamic = dynamic(&[(1, 1), (5, 0), (1, 15), (0, 0), (1, 1)]);
        let elf = tiny_elf(EM_AARCH64, &[
            (".interp", b"/lib/ld-linux-aarch64.so.1\0"),
            (".dynstr", dynstr),
            (".dynamic", &dynamic),
        ]);
        assert_eq!(machine(&elf).unwrap(), EM_AARCH64);
        assert_eq!(needed(&elf).unwrap(), ["libtirpc.so.3", "libc.so.6"]);
        assert_eq!(interp(&elf).unwrap().as_deref(), Some("/lib/ld-linux-aarch64.so.1"));
    }

    #[test]
    fn a_static_program_needs_nothing() {
        let elf = tiny_elf(EM_X86_64, &[(".text", b"\x90")]);
        assert!(needed(&elf).unwrap().is_empty());
        assert_eq!(interp(&elf).unwrap(), None);
        assert!(section(&elf, ".modinfo").is_err());
        assert!(machine(b"#!/bin/sh\n").is_err());
    }

    /// The host's own programs, when there: the parser against `ldd`'s view.
    #[test]
    fn agrees_with_a_real_program() {
        let Ok(data) = std::fs::read("/bin/ls") else { return };
        assert_eq!(machine(&data).unwrap(), if cfg!(target_arch = "x86_64") { EM_X86_64 } else { EM_AARCH64 });
        assert!(needed(&data).unwrap().iter().any(|n| n == "libc.so.6"));
        assert!(interp(&data).unwrap().is_some_and(|i| i.contains("ld-linux")));
    }
}
