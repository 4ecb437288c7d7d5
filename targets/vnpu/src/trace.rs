//! Chrome trace-event JSON for a simulator run: open the file in Perfetto (ui.perfetto.dev) or chrome://tracing.
//!
//! One process (the core) with one thread track per engine (`tid` = position in [`Engine::ALL`] + 1, named after
//! the engine). Every work instruction is a complete (`"ph": "X"`) event named by its mnemonic, with `ts`/`dur`
//! in microseconds at the profile's clock (whole nanoseconds; no `displayTimeUnit`, which some importers read as
//! the unit of `ts`) and `args` holding the instruction index, its text, its start cycle, its cycles and its work
//! measures (bytes, tiles, macs, elements). Synchronization (`set_flag`, `wait_flag`, `barrier`) takes no time and
//! is written as thread-scoped instant (`"ph": "i"`) events.

use std::io;

use serde_json::{Map, Value, json};

use crate::isa::Engine;
use crate::profile::Profile;
use crate::sim::SimReport;

/// The trace of `report` as a JSON value.
pub fn chrome_trace(report: &SimReport, profile: &Profile) -> Value {
    let mhz = profile.clock_mhz.max(1);
    let mut events = vec![json!({
        "name": "process_name", "ph": "M", "pid": 0, "tid": 0,
        "args": { "name": format!("vnpu:{} core 0", profile.name) },
    })];
    for e in Engine::ALL {
        let tid = e.index() + 1;
        events.push(json!({ "name": "thread_name", "ph": "M", "pid": 0, "tid": tid, "args": { "name": e.name() } }));
        events.push(json!({ "name": "thread_sort_index", "ph": "M", "pid": 0, "tid": tid, "args": { "sort_index": tid } }));
    }
    for ev in &report.events {
        let mut args = Map::new();
        args.insert("index".into(), json!(ev.index));
        args.insert("instr".into(), json!(ev.text));
        args.insert("start_cycle".into(), json!(ev.start));
        args.insert("cycles".into(), json!(ev.cycles));
        for (k, v) in &ev.args {
            args.insert((*k).into(), json!(v));
        }
        let tid = ev.engine.index() + 1;
        let ts = us(ns(ev.start, mhz));
        let event = if ev.cycles == 0
            && matches!(ev.name.as_str(), "set_flag" | "wait_flag" | "barrier")
        {
            json!({ "name": ev.name, "cat": "sync", "ph": "i", "s": "t", "pid": 0, "tid": tid, "ts": ts, "args": args })
        } else {
            let cat = match ev.engine {
                Engine::DmaIn | Engine::DmaOut => "dma",
                Engine::Cube => "cube",
                Engine::Vector => "vector",
            };
            json!({
                "name": ev.name, "cat": cat, "ph": "X", "pid": 0, "tid": tid,
                "ts": ts, "dur": us(ns(ev.start.saturating_add(ev.cycles), mhz) - ns(ev.start, mhz)),
                "args": args,
            })
        };
        events.push(event);
    }
    json!({
        "traceEvents": events,
        "otherData": {
            "profile": profile.name,
            "clock_mhz": profile.clock_mhz,
            "total_cycles": report.total_cycles,
            "bytes_loaded": report.bytes_loaded,
            "bytes_stored": report.bytes_stored,
            "macs": report.macs,
        },
    })
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

/// Writes the trace of `report` as pretty-printed JSON.
pub fn write_chrome_trace(
    report: &SimReport,
    profile: &Profile,
    out: impl io::Write,
) -> io::Result<()> {
    serde_json::to_writer_pretty(out, &chrome_trace(report, profile)).map_err(io::Error::other)
}
