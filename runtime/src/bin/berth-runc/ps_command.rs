//! `ps ID [ps options]`: the host's ps(1) table, cut down to the
//! container's processes (as runc prints it), or their pids as JSON.

use std::collections::HashSet;

use berth_runtime::container::{Globals, query};
use berth_runtime::error::{Error, Result};

use crate::args::Format;

/// The table or the JSON list for container `id`.
pub fn render(globals: &Globals, id: &str, format: Format, ps_args: &[String]) -> Result<String> {
    let pids = query::pids(globals, id)?;
    match format {
        Format::Json => Ok(format!("{}\n", serde_json::to_string(&pids).unwrap_or_default())),
        Format::Table => table(&pids, ps_args),
    }
}

fn table(pids: &[i32], ps_args: &[String]) -> Result<String> {
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".to_string()]
    } else {
        ps_args.to_vec()
    };
    let output = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| Error::io("running ps", "ps", &e))?;
    if !output.status.success() {
        return Err(Error::invalid(
            "ps options",
            format!(
                "ps {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    filter(&String::from_utf8_lossy(&output.stdout), pids)
}

/// The header and the lines whose PID column is one of `pids`.
fn filter(table: &str, pids: &[i32]) -> Result<String> {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    let column = header
        .split_whitespace()
        .position(|name| name == "PID")
        .ok_or_else(|| Error::invalid("ps options", "ps printed no PID column"))?;
    let wanted: HashSet<i32> = pids.iter().copied().collect();
    let mut text = format!("{header}\n");
    for line in lines {
        let pid = line.split_whitespace().nth(column).and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| wanted.contains(&p)) {
            text.push_str(line);
            text.push('\n');
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_containers_processes_are_kept_under_the_header() {
        let table = "UID PID PPID C STIME TTY TIME CMD\nroot 1 0 0 10:00 ? 00:00:01 init\nroot 42 1 0 10:01 ? 00:00:00 sleep 1000\nroot 43 42 0 10:01 ? 00:00:00 sh\n";
        assert_eq!(
            filter(table, &[42, 43]).unwrap(),
            "UID PID PPID C STIME TTY TIME CMD\nroot 42 1 0 10:01 ? 00:00:00 sleep 1000\nroot 43 42 0 10:01 ? 00:00:00 sh\n"
        );
        let bsd =
            "  PID TTY      STAT   TIME COMMAND\n   42 ?        S      0:00 sleep\n    7 ?        S      0:00 other\n";
        assert_eq!(
            filter(bsd, &[42]).unwrap(),
            "  PID TTY      STAT   TIME COMMAND\n   42 ?        S      0:00 sleep\n"
        );
        assert!(filter("USER COMMAND\n", &[1]).is_err());
    }
}
