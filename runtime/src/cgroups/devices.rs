//! Device access rules: the ones every container gets, and the
//! instructions of a v2 eBPF device filter (v1 writes are
//! [`super::device_transition`]'s).
//!
//! The filter reads the request (`access << 16 | type`, major, minor) and
//! tries the rules from the last to the first: the last rule that matches
//! decides, as later rules override earlier ones in v1. No match denies.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, Spec};

/// BPF_DEVCG_DEV_BLOCK / BPF_DEVCG_DEV_CHAR.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
/// BPF_DEVCG_ACC_MKNOD / READ / WRITE.
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

fn rule(kind: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str) -> LinuxDeviceCgroup {
    let mut rule = LinuxDeviceCgroup::default();
    rule.set_allow(true)
        .set_typ(Some(kind))
        .set_major(major)
        .set_minor(minor)
        .set_access(Some(access.to_string()));
    rule
}

/// The rules a container's cgroup gets: the spec's, then (as runc adds
/// them) access to the devices every container has and the terminals.
/// The spec's own `linux.devices` get no rule of their own: they are made
/// in /dev, and the spec's rules say whether they may be opened; a default
/// device the spec redefines loses its default rule too. With `deny all`
/// first in most specs, these are what the container may open.
pub fn container_rules(spec: &Spec) -> Vec<LinuxDeviceCgroup> {
    let linux = spec.linux().as_ref();
    let mut rules: Vec<LinuxDeviceCgroup> = linux
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    let redefined = |path: &str| {
        linux
            .and_then(|l| l.devices().as_ref())
            .into_iter()
            .flatten()
            .any(|d| d.path() == std::path::Path::new(path))
    };
    use LinuxDeviceType::{B, C};
    rules.push(rule(C, None, None, "m"));
    rules.push(rule(B, None, None, "m"));
    for (path, major, minor) in [
        ("/dev/null", 1, 3),
        ("/dev/random", 1, 8),
        ("/dev/full", 1, 7),
        ("/dev/tty", 5, 0),
        ("/dev/zero", 1, 5),
        ("/dev/urandom", 1, 9),
    ] {
        if !redefined(path) {
            rules.push(rule(C, Some(major), Some(minor), "rwm"));
        }
    }
    // The console, ptmx and tun, and every pts.
    for (major, minor) in [(5, 1), (5, 2), (10, 200)] {
        rules.push(rule(C, Some(major), Some(minor), "rwm"));
    }
    rules.push(rule(C, Some(136), None, "rwm"));
    rules
}

/// One eBPF instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// Destination (low nibble) and source (high nibble) registers.
    pub regs: u8,
    /// Jump offset or memory offset.
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Self {
            code,
            regs: (src << 4) | (dst & 0x0f),
            off,
            imm,
        }
    }

    /// The 8 bytes the kernel reads.
    pub fn bytes(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[0] = self.code;
        out[1] = self.regs;
        out[2..4].copy_from_slice(&self.off.to_le_bytes());
        out[4..8].copy_from_slice(&self.imm.to_le_bytes());
        out
    }
}

// Opcodes used (class | op | source).
const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const MOV64_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const AND32_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RSH32_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

fn access_mask(access: &str) -> i32 {
    access.chars().fold(0, |mask, c| {
        mask | match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => 0,
        }
    })
}

/// The instructions of a device filter for `rules`.
pub fn filter_program(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    // r1 = context; r2 = access_type; r3 = type; r4 = access; r5 = major; r6 = minor.
    let mut program = vec![
        Insn::new(LDX_W, 2, 1, 0, 0),
        Insn::new(MOV64_X, 3, 2, 0, 0),
        Insn::new(AND32_K, 3, 0, 0, 0xffff),
        Insn::new(MOV64_X, 4, 2, 0, 0),
        Insn::new(RSH32_K, 4, 0, 0, 16),
        Insn::new(LDX_W, 5, 1, 4, 0),
        Insn::new(LDX_W, 6, 1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let mut checks: Vec<(u8, u8, u8, i32)> = Vec::new(); // (code, dst, src, imm) jumping to the next block
        let mut prelude: Vec<Insn> = Vec::new();
        match rule.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::B => checks.push((JNE_K, 3, 0, DEV_BLOCK)),
            LinuxDeviceType::C | LinuxDeviceType::U => checks.push((JNE_K, 3, 0, DEV_CHAR)),
            // FIFOs are not devices the filter sees; the rule never matches.
            LinuxDeviceType::P => continue,
            LinuxDeviceType::A => {}
        }
        let access = access_mask(rule.access().as_deref().unwrap_or("rwm"));
        let all = ACC_READ | ACC_WRITE | ACC_MKNOD;
        if access != all {
            // The request's access must be within the rule's: (r4 & mask) == r4.
            prelude.push(Insn::new(MOV64_X, 7, 4, 0, 0));
            prelude.push(Insn::new(AND32_K, 7, 0, 0, access));
            checks.push((JNE_X, 7, 4, 0));
        }
        if let Some(major) = rule.major().filter(|m| *m >= 0) {
            checks.push((JNE_K, 5, 0, major as i32));
        }
        if let Some(minor) = rule.minor().filter(|m| *m >= 0) {
            checks.push((JNE_K, 6, 0, minor as i32));
        }
        // Block: [type check], [prelude + access check], [major], [minor], mov r0, exit.
        // Every check jumps past the end of the block.
        let unconditional = checks.is_empty();
        let mut block: Vec<Insn> = Vec::new();
        let total = prelude.len() + checks.len() + 2;
        let mut emitted_prelude = false;
        for (code, dst, src, imm) in checks {
            if code == JNE_X && !emitted_prelude {
                block.extend(prelude.iter().copied());
                emitted_prelude = true;
            }
            let remaining = total - block.len() - 1;
            block.push(Insn::new(code, dst, src, remaining as i16, imm));
        }
        block.push(Insn::new(MOV64_K, 0, 0, 0, i32::from(rule.allow())));
        block.push(Insn::new(EXIT, 0, 0, 0, 0));
        program.extend(block);
        if unconditional {
            // Every request stops here; the kernel's verifier refuses a
            // program with instructions no path reaches.
            return program;
        }
    }
    program.push(Insn::new(MOV64_K, 0, 0, 0, 0));
    program.push(Insn::new(EXIT, 0, 0, 0, 0));
    program
}

/// Runs a filter program on one request, as the kernel would; for tests.
#[cfg(test)]
pub fn interpret(program: &[Insn], kind: i32, access: i32, major: u32, minor: u32) -> u64 {
    let context = [((access as u32) << 16) | kind as u32, major, minor];
    let mut r = [0u64; 11];
    let mut pc = 0usize;
    loop {
        let insn = program[pc];
        let (dst, src) = ((insn.regs & 0x0f) as usize, (insn.regs >> 4) as usize);
        pc += 1;
        match insn.code {
            LDX_W => r[dst] = u64::from(context[(insn.off / 4) as usize]),
            MOV64_X => r[dst] = r[src],
            MOV64_K => r[dst] = insn.imm as u64,
            AND32_K => r[dst] = u64::from((r[dst] as u32) & insn.imm as u32),
            RSH32_K => r[dst] = u64::from((r[dst] as u32) >> insn.imm),
            JNE_K if r[dst] != insn.imm as u64 => pc += insn.off as usize,
            JNE_X if r[dst] != r[src] => pc += insn.off as usize,
            JNE_K | JNE_X => {}
            EXIT => return r[0],
            other => panic!("unknown opcode {other:#x}"),
        }
    }
}

/// A rule as a spec writes it, for tests.
#[cfg(test)]
pub(crate) fn spec_rule(
    allow: bool,
    kind: &str,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    serde_json::from_value(serde_json::json!({
        "allow": allow, "type": kind, "major": major, "minor": minor, "access": access
    }))
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::spec_rule as rule;
    use super::*;

    #[test]
    fn the_last_matching_rule_decides() {
        let rules = vec![
            rule(false, "a", None, None, "rwm"),
            rule(true, "c", Some(1), Some(3), "rwm"),
            rule(true, "c", Some(136), None, "rwm"),
            rule(true, "c", Some(1), Some(5), "r"),
            rule(false, "c", Some(1), Some(3), "w"),
        ];
        let program = filter_program(&rules);
        let run = |kind, access, major, minor| interpret(&program, kind, access, major, minor);
        assert_eq!(run(DEV_CHAR, ACC_READ, 1, 3), 1, "null readable");
        assert_eq!(run(DEV_CHAR, ACC_WRITE, 1, 3), 0, "a later rule denies writing null");
        assert_eq!(run(DEV_CHAR, ACC_READ | ACC_WRITE, 136, 7), 1, "any pty");
        assert_eq!(run(DEV_CHAR, ACC_READ, 1, 5), 1, "zero readable");
        assert_eq!(run(DEV_CHAR, ACC_WRITE, 1, 5), 0, "zero not writable");
        assert_eq!(run(DEV_BLOCK, ACC_READ, 8, 0), 0, "a disk is denied");
        assert_eq!(run(DEV_CHAR, ACC_MKNOD, 10, 200), 0, "no rule: denied");
        let allow_all = filter_program(&[rule(true, "a", None, None, "rwm")]);
        assert_eq!(interpret(&allow_all, DEV_BLOCK, ACC_WRITE, 8, 0), 1);
    }

    /// The kernel's verifier refuses a program with unreachable
    /// instructions, so every generated program must have none.
    #[test]
    fn every_instruction_is_reachable() {
        let cases = vec![
            vec![
                rule(false, "a", None, None, "rwm"),
                rule(true, "c", Some(1), Some(3), "rw"),
            ],
            vec![
                rule(true, "c", Some(1), Some(3), "rw"),
                rule(false, "a", None, None, "rwm"),
            ],
            vec![rule(true, "a", None, None, "rwm")],
            vec![
                rule(false, "b", None, None, "m"),
                rule(true, "a", None, None, "rwm"),
                rule(false, "c", Some(5), None, "rwm"),
            ],
            Vec::new(),
        ];
        for rules in cases {
            let program = filter_program(&rules);
            let mut reached = vec![false; program.len()];
            let mut pending = vec![0usize];
            while let Some(pc) = pending.pop() {
                if pc >= program.len() || std::mem::replace(&mut reached[pc], true) {
                    continue;
                }
                match program[pc].code {
                    EXIT => {}
                    JNE_K | JNE_X => pending.extend([pc + 1, pc + 1 + program[pc].off as usize]),
                    _ => pending.push(pc + 1),
                }
            }
            assert!(reached.iter().all(|r| *r), "unreachable instructions for {rules:?}");
            assert_eq!(program.last().map(|i| i.code), Some(EXIT));
        }
    }
}
