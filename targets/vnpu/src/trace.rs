//! Chrome trace-event JSON for simulator runs: open the file in Perfetto (ui.perfetto.dev) or chrome://tracing.
//!
//! One process (the core) with a `programs` track (`tid` 0: one slice per program run, for a model made of several
//! programs) and one thread track per engine (`tid` = position in [`Engine::ALL`] + 1, named after the engine).
//! Every work instruction is a complete (`"ph": "X"`) event named by its mnemonic, with `ts`/`dur` in microseconds
//! at the profile's clock (whole nanoseconds; no `displayTimeUnit`, which some importers read as the unit of `ts`)
//! and `args` holding the instruction index, its text, its start cycle, its cycles and its work measures (bytes,
//! tiles, macs, elements). Synchronization (`set_flag`, `wait_flag`, `barrier`) takes no time and is written as
//! thread-scoped instant (`"ph": "i"`) events. [`TraceBuilder`] lays several runs end to end; [`chrome_trace`] is
//! the one-run case.

use std::io;

use serde_json::{Map, Value, json};

use crate::isa::Engine;
use crate::profile::Profile;
use crate::sim::SimReport;

/// Collects the runs of one or more programs into one trace, each run starting where the previous one ended.
#[derive(Debug, Clone)]
pub struct TraceBuilder {
    mhz: u64,
    profile: String,
    events: Vec<Value>,
    offset: u64,
    runs: Vec<Value>,
}

impl TraceBuilder {
    /// An empty trace for a machine of `profile`.
    pub fn new(profile: &Profile) -> TraceBuilder {
        let mut events = vec![
            json!({
                "name": "process_name", "ph": "M", "pid": 0, "tid": 0,
                "args": { "name": format!("vnpu:{} core 0", profile.name) },
            }),
            json!({ "name": "thread_name", "ph": "M", "pid": 0, "tid": 0, "args": { "name": "programs" } }),
            json!({ "name": "thread_sort_index", "ph": "M", "pid": 0, "tid": 0, "args": { "sort_index": 0 } }),
        ];
        for e in Engine::ALL {
            let tid = e.index() + 1;
            events.push(json!({ "name": "thread_name", "ph": "M", "pid": 0, "tid": tid, "args": { "name": e.name() } }));
            events.push(json!({
                "name": "thread_sort_index", "ph": "M", "pid": 0, "tid": tid, "args": { "sort_index": tid },
            }));
        }
        TraceBuilder {
            mhz: profile.clock_mhz.max(1),
            profile: profile.name.clone(),
            events,
            offset: 0,
            runs: Vec::new(),
        }
    }

    /// Appends one run, named `name` on the `programs` track, after everything added so far.
    pub fn add(&mut self, name: &str, report: &SimReport) -> &mut Self {
        let mhz = self.mhz;
        let at = |cycle: u64| self.offset.saturating_add(cycle);
        let slice = |start: u64, cycles: u64| {
            let (a, b) = (
                ns(at(start), mhz),
                ns(at(start.saturating_add(cycles)), mhz),
            );
            (us(a), us(b - a))
        };
        let (ts, dur) = slice(0, report.total_cycles);
        self.events.push(json!({
            "name": name, "cat": "program", "ph": "X", "pid": 0, "tid": 0, "ts": ts, "dur": dur,
            "args": {
                "start_cycle": self.offset,
                "cycles": report.total_cycles,
                "bytes_loaded": report.bytes_loaded,
                "bytes_stored": report.bytes_stored,
                "macs": report.macs,
            },
        }));
        for ev in &report.events {
            let mut args = Map::new();
            args.insert("index".into(), json!(ev.index));
            args.insert("instr".into(), json!(ev.text));
            args.insert("start_cycle".into(), json!(at(ev.start)));
            args.insert("cycles".into(), json!(ev.cycles));
            for (k, v) in &ev.args {
                args.insert((*k).into(), json!(v));
            }
            let tid = ev.engine.index() + 1;
            let (ts, dur) = slice(ev.start, ev.cycles);
            let sync =
                ev.cycles == 0 && matches!(ev.name.as_str(), "set_flag" | "wait_flag" | "barrier");
            self.events.push(if sync {
                json!({ "name": ev.name, "cat": "sync", "ph": "i", "s": "t", "pid": 0, "tid": tid, "ts": ts, "args": args })
            } else {
                let cat = match ev.engine {
                    Engine::DmaIn | Engine::DmaOut => "dma",
                    Engine::Cube => "cube",
                    Engine::Vector => "vector",
                };
                json!({ "name": ev.name, "cat": cat, "ph": "X", "pid": 0, "tid": tid, "ts": ts, "dur": dur, "args": args })
            });
        }
        self.runs
            .push(json!({ "name": name, "cycles": report.total_cycles }));
        self.offset = at(report.total_cycles);
        self
    }

    /// The trace as a JSON value.
    pub fn finish(self) -> Value {
        json!({
            "traceEvents": self.events,
            "otherData": {
                "profile": self.profile,
                "clock_mhz": self.mhz,
                "total_cycles": self.offset,
                "programs": self.runs,
            },
        })
    }

    /// Writes the trace as pretty-printed JSON.
    pub fn write(self, out: impl io::Write) -> io::Result<()> {
        serde_json::to_writer_pretty(out, &self.finish()).map_err(io::Error::other)
    }
}

/// The trace of one run as a JSON value.
pub fn chrome_trace(report: &SimReport, profile: &Profile) -> Value {
    let mut t = TraceBuilder::new(profile);
    t.add("program", report);
    t.finish()
}

/// Writes the trace of one run as pretty-printed JSON.
pub fn write_chrome_trace(
    report: &SimReport,
    profile: &Profile,
    out: impl io::Write,
) -> io::Result<()> {
    let mut t = TraceBuilder::new(profile);
    t.add("program", report);
    t.write(out)
}

/// Whole nanoseconds at `cycle` (rounded down, so consecutive slices on a track never overlap).
fn ns(cycle: u64, mhz: u64) -> u64 {
    u64::try_from(u128::from(cycle) * 1000 / u128::from(mhz)).unwrap_or(u64::MAX)
}

/// Nanoseconds as the format's microseconds: at most three decimals, which importers round back to the same
/// nanosecond.
fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}
