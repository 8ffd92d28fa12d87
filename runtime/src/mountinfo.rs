//! `/proc/self/mountinfo`, line by line: the fields the runtime reads.

/// One mount of a mountinfo text.
#[derive(Debug, PartialEq, Eq)]
pub struct MountEntry<'a> {
    /// The directory of the filesystem mounted here (`/` for all of it).
    pub root: String,
    /// Where it is mounted.
    pub mount_point: String,
    /// The filesystem type (`proc`, `cgroup2`).
    pub fstype: &'a str,
    /// The superblock's options (`rw,memory`).
    pub super_options: &'a str,
}

/// The well-formed lines of `text`, in order.
pub fn entries(text: &str) -> impl Iterator<Item = MountEntry<'_>> {
    text.lines().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fields: Vec<&str> = left.split(' ').collect();
        let rest: Vec<&str> = right.split(' ').collect();
        if fields.len() < 5 || rest.len() < 3 {
            return None;
        }
        Some(MountEntry {
            root: unescape(fields[3]),
            mount_point: unescape(fields[4]),
            fstype: rest[0],
            super_options: rest[2],
        })
    })
}

/// mountinfo escapes spaces and the like as `\040`.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(code) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(code as char);
            i += 4;
            continue;
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_and_unescapes_paths() {
        let text = "30 1 0:24 /sys /host\\040proc/sys ro - proc proc rw\nnot a mount line\n";
        let all: Vec<MountEntry<'_>> = entries(text).collect();
        assert_eq!(
            all,
            [MountEntry {
                root: "/sys".into(),
                mount_point: "/host proc/sys".into(),
                fstype: "proc",
                super_options: "rw",
            }]
        );
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
