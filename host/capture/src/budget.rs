//! The verifier budget: what every eBPF program may cost, and the measurements to hold it to.
//!
//! A program that verifies with no room to spare on one kernel build fails on the next (one
//! sat 16 bytes over the 512-byte stack limit on a different build of the same version). So
//! the budget is a margin below the kernel's limits:
//! - combined stack (the deepest call chain's frames) ≤ 384 of 512 bytes;
//! - processed instructions ≤ 25 % of the verifier's 1,000,000;
//! - all programs verified in ≤ 1 s together.
//!
//! The stack is read from the object itself (every frame access is an `r10`-relative offset
//! in BPF code, so the static figure bounds what the verifier finds on any kernel); the
//! processed instructions come from the kernel after a load (`bpf_prog_info.verified_insns`,
//! Linux ≥ 5.16), the time from the load itself.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use anyhow::{Context as _, Result};

/// The kernel's limits and our margins under them.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub max_stack_bytes: u32,
    pub max_processed_insns: u32,
    pub max_total_verify: Duration,
}

/// The verifier's own limits.
pub const KERNEL_STACK_LIMIT: u32 = 512;
pub const KERNEL_INSN_LIMIT: u32 = 1_000_000;

impl Budget {
    pub const DEFAULT: Budget = Budget {
        max_stack_bytes: 384,
        max_processed_insns: KERNEL_INSN_LIMIT / 4,
        max_total_verify: Duration::from_secs(1),
    };
}

/// What one program cost to verify.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProgramCost {
    pub program: String,
    /// Combined stack of the deepest call chain, frames rounded up as the verifier does.
    pub stack_bytes: u32,
    /// Instructions the verifier processed (None: not loaded, or a kernel before 5.16).
    pub processed_insns: Option<u32>,
    /// Time the load (verification) took; None when not loaded.
    #[serde(serialize_with = "micros")]
    pub verify_time: Option<Duration>,
}

fn micros<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_u64(d.as_micros() as u64),
        None => s.serialize_none(),
    }
}

/// Every way `costs` cross `budget`, one line each naming the program and the figure.
pub fn violations(costs: &[ProgramCost], budget: &Budget) -> Vec<String> {
    let mut out = Vec::new();
    for c in costs {
        if c.stack_bytes > budget.max_stack_bytes {
            out.push(format!(
                "{}: combined stack {} bytes > budget {} (kernel limit {KERNEL_STACK_LIMIT})",
                c.program, c.stack_bytes, budget.max_stack_bytes
            ));
        }
        if let Some(n) = c.processed_insns
            && n > budget.max_processed_insns
        {
            out.push(format!(
                "{}: {n} processed instructions > budget {} (kernel limit {KERNEL_INSN_LIMIT})",
                c.program, budget.max_processed_insns
            ));
        }
    }
    let total: Duration = costs.iter().filter_map(|c| c.verify_time).sum();
    if total > budget.max_total_verify {
        out.push(format!(
            "all programs: verification took {} ms > budget {} ms",
            total.as_millis(),
            budget.max_total_verify.as_millis()
        ));
    }
    out
}

const BPF_LDX: u8 = 0x01;
const BPF_ST: u8 = 0x02;
const BPF_STX: u8 = 0x03;
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
const OP_MOV_X: u8 = 0xb0 | 0x08;
const OP_ADD_K: u8 = 0x00;
const OP_CALL: u8 = 0x80;
const BPF_PSEUDO_CALL: u8 = 1;
/// `ld_imm64` of a subprogram's address: a `bpf_loop` callback.
const BPF_PSEUDO_FUNC: u8 = 4;
const BPF_LD_IMM64: u8 = 0x18;
/// Stack the verifier adds to a frame that calls `bpf_loop` when it inlines the loop: three
/// spilled registers, once per subprogram however many loops it inlines
/// (`optimize_bpf_loop`).
const BPF_LOOP_INLINE_STACK: u32 = 24;
const FP: u8 = 10;

/// Combined stack per program of an eBPF object, by program name.
pub fn static_stack(object: &[u8]) -> Result<BTreeMap<String, u32>> {
    let mut obj = aya_obj::Object::parse(object).context("parsing the eBPF object")?;
    let text: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
    obj.relocate_calls(&text)
        .context("linking the eBPF object's calls")?;
    let mut out = BTreeMap::new();
    for (name, prog) in &obj.programs {
        let func = obj
            .functions
            .get(&prog.function_key())
            .with_context(|| format!("program {name} has no code"))?;
        out.insert(name.clone(), combined_stack(&func.instructions));
    }
    Ok(out)
}

/// The deepest chain of frames in one linked program (entry at 0, subprograms appended).
fn combined_stack(insns: &[aya_obj::generated::bpf_insn]) -> u32 {
    // Subprogram entries: 0, every bpf-to-bpf call target and every callback whose address
    // is taken (a `bpf_loop` callback runs in a frame below the one that passed it).
    let mut starts: Vec<usize> = vec![0];
    let mut calls: Vec<(usize, usize)> = Vec::new(); // (call site, target)
    let mut callback_refs: Vec<usize> = Vec::new();
    for (pc, i) in insns.iter().enumerate() {
        let call = i.code == BPF_JMP | OP_CALL && i.src_reg() == BPF_PSEUDO_CALL;
        let callback = i.code == BPF_LD_IMM64 && i.src_reg() == BPF_PSEUDO_FUNC;
        if call || callback {
            let target = (pc as i64 + i.imm as i64 + 1) as usize;
            starts.push(target);
            calls.push((pc, target));
        }
        if callback {
            callback_refs.push(pc);
        }
    }
    starts.sort_unstable();
    starts.dedup();
    let sub_of = |pc: usize| starts.partition_point(|&s| s <= pc) - 1;
    let mut frame = vec![0u32; starts.len()];
    let mut fp_alias: [Option<i64>; 11] = [None; 11];
    for (pc, i) in insns.iter().enumerate() {
        if starts.binary_search(&pc).is_ok() {
            fp_alias = [None; 11];
        }
        let s = sub_of(pc);
        let class = i.code & 0x07;
        let (dst, src) = (i.dst_reg() as usize, i.src_reg() as usize);
        let mut touch = |base: i64| {
            if base < 0 {
                frame[s] = frame[s].max((-base) as u32);
            }
        };
        match class {
            BPF_ST | BPF_STX if dst == FP as usize => touch(i.off as i64),
            BPF_ST | BPF_STX if dst < 11 => {
                if let Some(a) = fp_alias[dst] {
                    touch(a + i.off as i64)
                }
            }
            BPF_LDX if src == FP as usize => touch(i.off as i64),
            BPF_LDX if src < 11 => {
                if let Some(a) = fp_alias[src] {
                    touch(a + i.off as i64)
                }
            }
            _ => {}
        }
        // Register writes: track copies of r10 moved by constants, forget everything else.
        if dst < 11 {
            if i.code == BPF_ALU64 | OP_MOV_X && src == FP as usize {
                fp_alias[dst] = Some(0);
            } else if i.code == BPF_ALU64 | OP_ADD_K && fp_alias[dst].is_some() {
                let a = fp_alias[dst].unwrap_or(0) + i.imm as i64;
                fp_alias[dst] = Some(a);
                touch(a);
            } else if class == BPF_ALU64 || class == 0x04 || class == BPF_LDX || class == 0x00 {
                fp_alias[dst] = None;
            }
        }
        if i.code == BPF_JMP | OP_CALL {
            for r in fp_alias.iter_mut().take(6) {
                *r = None; // calls clobber r0-r5
            }
        }
    }
    let mut loop_callers: Vec<usize> = callback_refs.into_iter().map(sub_of).collect();
    loop_callers.dedup();
    for s in loop_callers {
        frame[s] = frame[s].next_multiple_of(8) + BPF_LOOP_INLINE_STACK;
    }
    let mut callees: HashMap<usize, Vec<usize>> = HashMap::new();
    for (site, target) in calls {
        callees
            .entry(sub_of(site))
            .or_default()
            .push(sub_of(target));
    }
    fn deepest(s: usize, frame: &[u32], callees: &HashMap<usize, Vec<usize>>, depth: u32) -> u32 {
        let own = frame[s].max(1).div_ceil(32) * 32;
        if depth > 8 {
            return own; // the verifier allows 8 frames; deeper would be rejected anyway
        }
        own + callees.get(&s).map_or(0, |cs| {
            cs.iter()
                .map(|&c| deepest(c, frame, callees, depth + 1))
                .max()
                .unwrap_or(0)
        })
    }
    deepest(0, &frame, &callees, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(program: &str, stack: u32, insns: u32, ms: u64) -> ProgramCost {
        ProgramCost {
            program: program.into(),
            stack_bytes: stack,
            processed_insns: Some(insns),
            verify_time: Some(Duration::from_millis(ms)),
        }
    }

    /// The check can fail: a program over each margin is named with its figure.
    #[test]
    fn budget_names_the_program_and_figure_over_it() {
        let costs = [
            cost("fits", 320, 1000, 10),
            cost("deep", 528, 1000, 10),
            cost("long", 64, 345_249, 990),
        ];
        let v = violations(&costs, &Budget::DEFAULT);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v[0].starts_with("deep: combined stack 528 bytes > budget 384"));
        assert!(v[1].starts_with("long: 345249 processed instructions > budget 250000"));
        assert!(v[2].starts_with("all programs: verification took 1010 ms"));
        assert!(violations(&costs[..1], &Budget::DEFAULT).is_empty());
    }

    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> aya_obj::generated::bpf_insn {
        aya_obj::generated::bpf_insn {
            code,
            _bitfield_align_1: [],
            _bitfield_1: aya_obj::generated::bpf_insn::new_bitfield_1(dst, src),
            off,
            imm,
        }
    }

    /// A `bpf_loop` callback's frame sits below the frame that passed it, and that frame
    /// grows by the three registers the verifier spills when it inlines the loop.
    #[test]
    fn callback_frames_count_below_their_caller() {
        const EXIT: u8 = BPF_JMP | 0x90;
        const ST_DW: u8 = BPF_ST | 0x18 | 0x60; // *(u64 *)(dst + off) = imm
        let insns = [
            // main: a 40-byte frame, then r2 = &callback twice (two slots each), exit
            insn(ST_DW, FP, 0, -40, 0),
            insn(BPF_LD_IMM64, 2, BPF_PSEUDO_FUNC, 0, 4),
            insn(0, 0, 0, 0, 0),
            insn(BPF_LD_IMM64, 2, BPF_PSEUDO_FUNC, 0, 2),
            insn(0, 0, 0, 0, 0),
            insn(EXIT, 0, 0, 0, 0),
            // callback at 6: an 8-byte frame
            insn(ST_DW, FP, 0, -8, 0),
            insn(EXIT, 0, 0, 0, 0),
        ];
        // (40 + 24 once) rounded to 64, plus 8 rounded to 32.
        assert_eq!(combined_stack(&insns), 96);
        // Without the references, only main's frame.
        let mut plain = insns;
        plain[1] = insn(BPF_LD_IMM64, 2, 0, 0, 0);
        plain[3] = insn(BPF_LD_IMM64, 2, 0, 0, 0);
        assert_eq!(combined_stack(&plain), 64);
    }

    /// The real object, with a budget it cannot meet, fails on every program: the static
    /// stack figures are real, not zeros.
    #[test]
    fn real_object_fails_a_budget_too_tight_for_it() {
        let stacks = static_stack(super::super::EBPF_OBJECT).expect("the eBPF object parses");
        assert!(stacks.contains_key("sonde_exit_send"), "{stacks:?}");
        let costs: Vec<_> = stacks
            .iter()
            .map(|(p, &s)| ProgramCost {
                program: p.clone(),
                stack_bytes: s,
                processed_insns: None,
                verify_time: None,
            })
            .collect();
        let tight = Budget {
            max_stack_bytes: 16,
            ..Budget::DEFAULT
        };
        let v = violations(&costs, &tight);
        assert!(
            v.iter()
                .any(|l| l.starts_with("sonde_exit_send: combined stack")),
            "{v:?}"
        );
        // ...and meets the real one.
        let v = violations(&costs, &Budget::DEFAULT);
        assert!(v.is_empty(), "{v:?}");
    }
}
