//! The fewest v1 `devices.allow`/`devices.deny` writes that take a cgroup
//! from the access it has now to the access a rule list asks for.
//!
//! Writing a rule list as it stands starts with `a *:* rwm` to
//! `devices.deny`, which for a moment denies every device, `/dev/null`
//! included: a running container's writes fail while `update` re-applies
//! its rules. So the kernel's bookkeeping is modelled here (a default
//! behaviour plus exceptions keyed by type, major and minor, each with its
//! r/w/m bits), the target is the current state with the rules applied in
//! order, and only the difference is written. Where the defaults differ,
//! or both allow (the kernel's `devices.list` then hides the exceptions),
//! the reset cannot be avoided and the target is written whole.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

const READ: u8 = 1;
const WRITE: u8 = 2;
const MKNOD: u8 = 4;

/// A device type, major and minor (`None` for `*`).
type Key = (char, Option<u32>, Option<u32>);

/// What a v1 devices cgroup lets through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceState {
    default_allow: bool,
    /// Devices that are the exception to the default, in the kernel's order.
    exceptions: Vec<(Key, u8)>,
}

impl DeviceState {
    /// The state `devices.list` shows: `a *:* rwm` alone for allow-by-default,
    /// otherwise the allowed devices.
    pub fn from_list(list: &str) -> Self {
        let mut state = Self {
            default_allow: false,
            exceptions: Vec::new(),
        };
        for line in list.lines() {
            let Some((key, access)) = parse_line(line) else {
                continue;
            };
            if key.0 == 'a' {
                state.default_allow = true;
                state.exceptions.clear();
            } else {
                state.add(key, access);
            }
        }
        state
    }

    /// This state with `rules` written in order, as the kernel would keep it.
    pub fn with_rules(&self, rules: &[LinuxDeviceCgroup]) -> Self {
        let mut state = self.clone();
        for rule in rules {
            let (key, access) = rule_key(rule);
            if key.0 == 'a' {
                state.default_allow = rule.allow();
                state.exceptions.clear();
            } else if rule.allow() != state.default_allow {
                // An exception to the default.
                state.add(key, access);
            } else {
                // Agrees with the default: takes back an exception.
                state.remove(key, access);
            }
        }
        state
    }

    /// The (file, line) writes that take `self` to `target`.
    pub fn transition_to(&self, target: &Self) -> Vec<(&'static str, String)> {
        let exception_file = |default_allow: bool| if default_allow { "devices.deny" } else { "devices.allow" };
        if self.default_allow != target.default_allow || target.default_allow {
            let reset = if target.default_allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            let mut writes = vec![(reset, "a *:* rwm".to_string())];
            let file = exception_file(target.default_allow);
            writes.extend(
                target
                    .exceptions
                    .iter()
                    .map(|(key, access)| (file, line(*key, *access))),
            );
            return writes;
        }
        // Both deny by default: grant what is new first, then take back what
        // is no longer allowed, so a device allowed before and after stays
        // allowed throughout.
        let mut writes = Vec::new();
        for (key, access) in &target.exceptions {
            let added = access & !self.access(*key);
            if added != 0 {
                writes.push(("devices.allow", line(*key, added)));
            }
        }
        for (key, access) in &self.exceptions {
            let removed = access & !target.access(*key);
            if removed != 0 {
                writes.push(("devices.deny", line(*key, removed)));
            }
        }
        writes
    }

    fn access(&self, key: Key) -> u8 {
        self.exceptions.iter().find(|(k, _)| *k == key).map_or(0, |(_, a)| *a)
    }

    fn add(&mut self, key: Key, access: u8) {
        match self.exceptions.iter_mut().find(|(k, _)| *k == key) {
            Some((_, bits)) => *bits |= access,
            None => self.exceptions.push((key, access)),
        }
    }

    fn remove(&mut self, key: Key, access: u8) {
        for (k, bits) in &mut self.exceptions {
            if *k == key {
                *bits &= !access;
            }
        }
        self.exceptions.retain(|(_, bits)| *bits != 0);
    }
}

fn rule_key(rule: &LinuxDeviceCgroup) -> (Key, u8) {
    let kind = match rule.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => 'a',
        LinuxDeviceType::B => 'b',
        // Unbuffered character devices are character devices to the kernel.
        LinuxDeviceType::C | LinuxDeviceType::U => 'c',
        LinuxDeviceType::P => 'p',
    };
    let number = |n: Option<i64>| n.and_then(|n| u32::try_from(n).ok());
    let access = rule.access().as_deref().map_or(READ | WRITE | MKNOD, access_bits);
    ((kind, number(rule.major()), number(rule.minor())), access)
}

fn access_bits(access: &str) -> u8 {
    access.chars().fold(0, |bits, c| match c {
        'r' => bits | READ,
        'w' => bits | WRITE,
        'm' => bits | MKNOD,
        _ => bits,
    })
}

fn parse_line(line: &str) -> Option<(Key, u8)> {
    let mut fields = line.split_whitespace();
    let kind = fields.next()?.chars().next()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let access = access_bits(fields.next()?);
    let number = |n: &str| if n == "*" { Some(None) } else { n.parse().ok().map(Some) };
    Some(((kind, number(major)?, number(minor)?), access))
}

fn line((kind, major, minor): Key, access: u8) -> String {
    let number = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
    let access: String = [(READ, 'r'), (WRITE, 'w'), (MKNOD, 'm')]
        .into_iter()
        .filter(|(bit, _)| access & bit != 0)
        .map(|(_, c)| c)
        .collect();
    if kind == 'a' {
        return format!("a *:* {access}");
    }
    format!("{kind} {}:{} {access}", number(major), number(minor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::devices::spec_rule as rule;

    fn container_rules() -> Vec<LinuxDeviceCgroup> {
        vec![
            rule(false, "a", None, None, "rwm"),
            rule(false, "c", Some(1), Some(11), "rwa"),
            rule(true, "c", None, None, "m"),
            rule(true, "c", Some(1), Some(3), "rwm"),
        ]
    }

    #[test]
    fn a_fresh_cgroup_that_allows_everything_is_reset_then_granted() {
        let current = DeviceState::from_list("a *:* rwm\n");
        let target = current.with_rules(&container_rules());
        assert_eq!(
            current.transition_to(&target),
            [
                ("devices.deny", "a *:* rwm".to_string()),
                ("devices.allow", "c *:* m".to_string()),
                ("devices.allow", "c 1:3 rwm".to_string()),
            ]
        );
    }

    #[test]
    fn reapplying_the_same_rules_writes_nothing() {
        let current = DeviceState::from_list("c *:* m\nc 1:3 rwm\n");
        let target = current.with_rules(&container_rules());
        assert_eq!(target, current);
        assert!(current.transition_to(&target).is_empty());
    }

    #[test]
    fn a_change_grants_before_it_takes_back_and_never_resets() {
        let current = DeviceState::from_list("c *:* m\nc 1:3 rwm\nc 1:5 rwm\n");
        let mut rules = container_rules();
        rules.push(rule(true, "c", Some(1), Some(9), "rw"));
        let target = DeviceState::from_list("a *:* rwm").with_rules(&rules);
        assert_eq!(
            current.transition_to(&target),
            [
                ("devices.allow", "c 1:9 rw".to_string()),
                ("devices.deny", "c 1:5 rwm".to_string()),
            ]
        );
    }

    #[test]
    fn allow_by_default_with_exceptions_is_written_whole() {
        let current = DeviceState::from_list("a *:* rwm\n");
        let target = current.with_rules(&[rule(true, "a", None, None, "rwm"), rule(false, "b", Some(8), None, "w")]);
        assert_eq!(
            current.transition_to(&target),
            [
                ("devices.allow", "a *:* rwm".to_string()),
                ("devices.deny", "b 8:* w".to_string()),
            ]
        );
    }

    #[test]
    fn a_deny_takes_back_only_the_bits_it_names() {
        let state = DeviceState::from_list("c 1:3 rwm\n").with_rules(&[rule(false, "c", Some(1), Some(3), "w")]);
        assert_eq!(state, DeviceState::from_list("c 1:3 rm\n"));
    }
}
