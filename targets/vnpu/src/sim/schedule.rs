//! The scheduler: four in-order queues on their own timelines, flags and barriers between them, vector clocks for
//! race detection, and the trace of what ran when.

use std::collections::{HashMap, VecDeque};

use super::exec::Effect;
use super::memory::Region;
use super::{EngineStats, Machine, SimReport, TraceEvent, Trap, TrapKind};
use crate::isa::{Engine, Flag, Instr, Program};
use crate::race::{self, Clock, Conflict, Runs, Shadow};

pub(super) struct Run<'a> {
    m: &'a mut Machine,
    program: &'a Program,
    queues: [Vec<usize>; 4],
    pc: [usize; 4],
    free: [u64; 4],
    channel_free: [u64; 2],
    clocks: [Clock; 4],
    /// Fired, not yet awaited flags: (fire cycle, setter's clock, set_flag's index), oldest first.
    flags: HashMap<Flag, VecDeque<(u64, Clock, usize)>>,
    shadow: Shadow,
    report: SimReport,
}

impl<'a> Run<'a> {
    pub(super) fn new(m: &'a mut Machine, program: &'a Program) -> Run<'a> {
        let mut queues: [Vec<usize>; 4] = Default::default();
        for (i, instr) in program.instrs.iter().enumerate() {
            match instr.engine() {
                Some(e) => queues[e.index()].push(i),
                None => queues.iter_mut().for_each(|q| q.push(i)),
            }
        }
        Run {
            m,
            program,
            queues,
            pc: [0; 4],
            free: [0; 4],
            channel_free: [0; 2],
            clocks: [[0; 4]; 4],
            flags: HashMap::new(),
            shadow: Shadow::default(),
            report: SimReport {
                total_cycles: 0,
                engines: [EngineStats::default(); 4],
                bytes_loaded: 0,
                bytes_stored: 0,
                macs: 0,
                events: Vec::new(),
            },
        }
    }

    fn next(&self, e: usize) -> Option<usize> {
        self.queues[e].get(self.pc[e]).copied()
    }

    fn channel(&self, e: Engine) -> Option<usize> {
        match e {
            Engine::DmaIn => Some(0),
            Engine::DmaOut => Some(usize::from(self.m.profile.dma.engines >= 2)),
            _ => None,
        }
    }

    /// When engine `e`'s next instruction can start, or `None` if it is blocked (or done).
    fn ready(&self, e: usize) -> Option<u64> {
        let i = self.next(e)?;
        match &self.program.instrs[i] {
            Instr::WaitFlag(f) => self
                .flags
                .get(f)?
                .front()
                .map(|(t, _, _)| t.max(&self.free[e]))
                .copied(),
            Instr::Barrier => (0..4)
                .all(|f| self.next(f) == Some(i))
                .then(|| self.free.iter().copied().max().unwrap_or(0)),
            Instr::Load(_) | Instr::Store(_) => {
                let ch = self
                    .channel(Engine::ALL[e])
                    .map_or(0, |c| self.channel_free[c]);
                Some(self.free[e].max(ch))
            }
            _ => Some(self.free[e]),
        }
    }

    fn trap(&self, index: usize, kind: TrapKind) -> Trap {
        let instr = self.program.instrs.get(index);
        Trap {
            index,
            engine: instr.and_then(Instr::engine),
            instr: instr.map(ToString::to_string).unwrap_or_default(),
            kind: Box::new(kind),
        }
    }

    pub(super) fn go(mut self) -> Result<SimReport, Trap> {
        // A flag from an engine to itself could never order anything (and its wait could deadlock the queue).
        for (i, instr) in self.program.instrs.iter().enumerate() {
            if let Instr::SetFlag(f) | Instr::WaitFlag(f) = instr
                && f.src == f.dst
            {
                return Err(self.trap(
                    i,
                    TrapKind::BadOperands("a flag's src and dst must differ".into()),
                ));
            }
        }
        loop {
            let pick = (0..4).filter_map(|e| self.ready(e).map(|t| (t, e))).min();
            let Some((start, e)) = pick else {
                if (0..4).all(|e| self.next(e).is_none()) {
                    break;
                }
                return Err(self.deadlock());
            };
            let index = self.queues[e][self.pc[e]];
            self.step(e, index, start)?;
        }
        self.report.total_cycles = self.free.iter().copied().max().unwrap_or(0);
        Ok(self.report)
    }

    fn deadlock(&self) -> Trap {
        let mut blocked = Vec::new();
        let mut first = None;
        for e in 0..4 {
            if let Some(i) = self.next(e) {
                first.get_or_insert(i);
                let what = match &self.program.instrs[i] {
                    Instr::WaitFlag(_) => "waits for a set_flag that never fires",
                    Instr::Barrier => "waits at a barrier",
                    _ => "is blocked",
                };
                blocked.push(format!(
                    "{} {what} (instruction {i}: `{}`)",
                    Engine::ALL[e],
                    self.program.instrs[i]
                ));
            }
        }
        self.trap(first.unwrap_or(0), TrapKind::Deadlock(blocked.join("; ")))
    }

    /// Records an executed instruction: its trace event and its engine's busy and stall time.
    fn event(
        &mut self,
        e: usize,
        index: usize,
        start: u64,
        cycles: u64,
        args: Vec<(&'static str, u64)>,
    ) {
        let program = self.program;
        let instr = &program.instrs[index];
        let stats = &mut self.report.engines[e];
        stats.busy_cycles = stats.busy_cycles.saturating_add(cycles);
        stats.stall_cycles = stats
            .stall_cycles
            .saturating_add(start.saturating_sub(self.free[e]));
        stats.instructions += 1;
        if self.m.record_events {
            self.report.events.push(TraceEvent {
                index,
                engine: Engine::ALL[e],
                name: instr.mnemonic(),
                text: instr.to_string(),
                start,
                cycles,
                args,
            });
        }
        self.free[e] = start.saturating_add(cycles);
        self.pc[e] += 1;
    }

    fn step(&mut self, e: usize, index: usize, start: u64) -> Result<(), Trap> {
        let program = self.program;
        let instr = &program.instrs[index];
        let effect = match instr {
            Instr::Barrier => {
                let mut all = [0u64; 4];
                for c in &self.clocks {
                    race::join(&mut all, c);
                }
                for f in 0..4 {
                    self.clocks[f] = all;
                    self.event(f, index, start, 0, Vec::new());
                }
                self.shadow.clear();
                return Ok(());
            }
            Instr::SetFlag(f) => {
                self.clocks[e][e] += 1;
                self.flags
                    .entry(*f)
                    .or_default()
                    .push_back((start, self.clocks[e], index));
                self.event(e, index, start, 0, Vec::new());
                return Ok(());
            }
            Instr::WaitFlag(f) => {
                let mut args = Vec::new();
                if let Some((_, clock, set_by)) =
                    self.flags.get_mut(f).and_then(VecDeque::pop_front)
                {
                    race::join(&mut self.clocks[e], &clock);
                    args.push(("set_by", set_by as u64));
                }
                self.clocks[e][e] += 1;
                self.event(e, index, start, 0, args);
                return Ok(());
            }
            Instr::Load(d) => self.m.dma(d, true),
            Instr::Store(d) => self.m.dma(d, false),
            Instr::Mmad(mm) => self.m.mmad(mm),
            Instr::Vector(v) => self.m.vector(v),
        }
        .map_err(|k| self.trap(index, k))?;
        self.clocks[e][e] += 1;
        self.check_races(e, index, &effect)?;
        for (r, vals) in &effect.writes {
            self.m.write(r, vals);
        }
        match instr {
            Instr::Load(_) => self.report.bytes_loaded += arg(&effect, "bytes"),
            Instr::Store(_) => self.report.bytes_stored += arg(&effect, "bytes"),
            Instr::Mmad(_) => self.report.macs += arg(&effect, "macs"),
            _ => {}
        }
        if let Some(c) = instr.engine().and_then(|en| self.channel(en)) {
            self.channel_free[c] = start.saturating_add(effect.cycles);
        }
        self.event(e, index, start, effect.cycles, effect.args);
        let running = [0, 1, 2, 3].map(|f| self.next(f).is_some());
        self.shadow.prune(&self.clocks, &running);
        Ok(())
    }

    fn check_races(&mut self, e: usize, index: usize, effect: &Effect) -> Result<(), Trap> {
        let clock = self.clocks[e];
        let epoch = clock[e];
        let accesses: Vec<(&Region, bool)> = effect
            .reads
            .iter()
            .map(|r| (r, false))
            .chain(effect.writes.iter().map(|(r, _)| (r, true)))
            .collect();
        let runs: Vec<Runs> = accesses.iter().map(|(r, _)| r.runs()).collect();
        for ((r, write), runs) in accesses.iter().zip(&runs) {
            if let Some(Conflict {
                start,
                end,
                other_index,
                other_engine,
                other_write,
            }) = self.shadow.check(&r.mem, runs, *write, e, &clock)
            {
                let rw = |w: bool| if w { "write" } else { "read" };
                return Err(self.trap(
                    index,
                    TrapKind::Race {
                        mem: r.mem.clone(),
                        start,
                        end,
                        this: rw(*write),
                        other: rw(other_write),
                        other_index,
                        other_engine,
                    },
                ));
            }
        }
        for ((r, write), runs) in accesses.into_iter().zip(runs) {
            self.shadow.record(&r.mem, runs, write, e, epoch, index);
        }
        Ok(())
    }
}

fn arg(effect: &Effect, name: &str) -> u64 {
    effect
        .args
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, v)| *v)
}
