//! Tracepoint `format` files: where each field sits in this kernel's record.
use std::{collections::HashMap, path::Path};

use anyhow::{Context as _, Result, anyhow};

/// One field of a tracepoint record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u16,
    pub size: u16,
}

/// Fields of a tracepoint by name.
#[derive(Debug, Default)]
pub struct Format {
    pub fields: HashMap<String, Field>,
}

impl Format {
    pub fn read(tracefs: &Path, category: &str, name: &str) -> Result<Self> {
        let p = tracefs.join("events").join(category).join(name).join("format");
        let text = std::fs::read_to_string(&p).with_context(|| format!("tracepoint {category}:{name} not available ({})", p.display()))?;
        Ok(Self::parse(&text))
    }

    /// Parses lines like `field:__u16 sport;<TAB>offset:24;<TAB>size:2;<TAB>signed:0;`.
    pub fn parse(text: &str) -> Self {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else { continue };
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in rest.split(';') {
                let part = part.trim();
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse::<u16>().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse::<u16>().ok();
                } else if decl.is_none() && !part.is_empty() && !part.contains(':') {
                    decl = Some(part);
                }
            }
            let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else { continue };
            // The name is the last identifier of the declaration, minus any
            // array suffix: `__u8 saddr[4]` → saddr, `const void * skaddr` → skaddr.
            let name = decl.rsplit([' ', '*']).next().unwrap_or(decl);
            let name = name.split('[').next().unwrap_or(name);
            fields.insert(name.to_string(), Field { offset, size });
        }
        Self { fields }
    }

    pub fn field(&self, name: &str) -> Result<Field> {
        self.fields.get(name).copied().ok_or_else(|| anyhow!("tracepoint has no field {name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET_STATE_6_18: &str = "name: inet_sock_set_state\nID: 2287\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;\n\
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;\n\
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;\n\
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;\n\n\
print fmt: \"family=%s\", REC->family\n";

    #[test]
    fn parses_fields_with_pointers_and_arrays() {
        let f = Format::parse(SET_STATE_6_18);
        assert_eq!(f.field("skaddr").unwrap(), Field { offset: 8, size: 8 });
        assert_eq!(f.field("oldstate").unwrap(), Field { offset: 16, size: 4 });
        assert_eq!(f.field("sport").unwrap(), Field { offset: 24, size: 2 });
        assert_eq!(f.field("protocol").unwrap(), Field { offset: 30, size: 2 });
        assert_eq!(f.field("saddr_v6").unwrap(), Field { offset: 40, size: 16 });
        assert!(f.field("daddr").is_err());
    }

    #[test]
    fn old_kernels_u8_protocol() {
        let f = Format::parse("\tfield:__u8 protocol;\toffset:30;\tsize:1;\tsigned:0;\n");
        assert_eq!(f.field("protocol").unwrap(), Field { offset: 30, size: 1 });
    }
}
