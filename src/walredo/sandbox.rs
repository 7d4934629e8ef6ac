//! The seccomp allowlist of the redo child (docs/walredo.md §4), defined here and compiled to classic BPF with
//! seccompiler. The child receives the program in its first message ('S') and installs it before serving any
//! request; a system call outside the list kills the process.
//!
//! The list is what the child was measured to need after sandboxing (docs/walredo.md §4): reading requests,
//! writing pages and log lines, growing the heap (malloc uses brk only), exiting, and getpid on the FATAL path.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the redo sandbox is not built for this architecture ({0})")]
    UnsupportedArch(&'static str),
    #[error("cannot build the seccomp filter: {0}")]
    Build(String),
}

/// System calls the child may make after installing the filter.
pub fn allowed_syscalls() -> Vec<(&'static str, i64)> {
    vec![
        ("read", libc::SYS_read),
        ("write", libc::SYS_write),
        ("brk", libc::SYS_brk),
        ("exit_group", libc::SYS_exit_group),
        ("getpid", libc::SYS_getpid),
    ]
}

fn target_arch() -> Result<TargetArch, SandboxError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(TargetArch::x86_64),
        "aarch64" => Ok(TargetArch::aarch64),
        other => Err(SandboxError::UnsupportedArch(other)),
    }
}

/// The filter as the bytes of the 'S' message: `struct sock_filter` entries in native byte order.
pub fn program_bytes() -> Result<Vec<u8>, SandboxError> {
    let rules = allowed_syscalls()
        .into_iter()
        .map(|(_, nr)| (nr, vec![]))
        .collect::<BTreeMap<_, _>>();
    // Mismatch (a syscall not in the list, or another architecture): kill the whole process.
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        target_arch()?,
    )
    .map_err(|e| SandboxError::Build(e.to_string()))?;
    let program: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| SandboxError::Build(e.to_string()))?;
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for insn in &program {
        bytes.extend_from_slice(&insn.code.to_ne_bytes());
        bytes.push(insn.jt);
        bytes.push(insn.jf);
        bytes.extend_from_slice(&insn.k.to_ne_bytes());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_is_whole_instructions_within_the_child_limit() {
        let bytes = program_bytes().unwrap();
        assert_eq!(bytes.len() % 8, 0);
        let n = bytes.len() / 8;
        assert!((1..=4096).contains(&n), "{n} instructions");
        // The last instruction returns an action; the program checks the architecture first.
        assert!(
            bytes
                .windows(4)
                .any(|w| w == 0xC000003Eu32.to_ne_bytes() || w == 0xC00000B7u32.to_ne_bytes())
        );
    }
}
