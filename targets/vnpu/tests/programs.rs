//! Hand-written vnpu programs run on both shipped profiles: a double-buffered tiled matmul, a softmax, and
//! deliberately broken programs; their text forms, cycle counts and a trace are golden files under
//! `tests/golden/` (rewrite them with `UPDATE_GOLDEN=1 cargo test -p jiuzhou-target-vnpu`).

use std::path::PathBuf;

use jiuzhou_target_vnpu::isa::{binary, text};
use jiuzhou_target_vnpu::{
    Access, BinaryOp, DType, Engine, Machine, Operand, Profile, Program, ProgramBuilder, ReduceOp,
    SimReport, UnaryOp, trace,
};

const PROFILES: [&str; 2] = ["default", "vector_heavy"];

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Compares `actual` with the golden file `name`, or rewrites the file when `UPDATE_GOLDEN` is set.
fn check_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "golden file {} differs (rerun with UPDATE_GOLDEN=1 to accept):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

const DIM: u64 = 64;
const A_AT: u64 = 0;
const B_AT: u64 = DIM * DIM * 4;
const C_AT: u64 = 2 * DIM * DIM * 4;

/// `C[64×64] = A[64×64] · B[64×64]` (f32 in global memory) with the profile's matrix input dtype on chip: 32×32
/// output blocks, 32-deep k steps, double-buffered L0A/L0B (the load of step n+1 overlaps the mmad of step n) and
/// double-buffered L0C (the store of one block overlaps the next block's mmads).
fn matmul64(p: &Profile) -> Program {
    matmul64_buffered(p, 2)
}

/// [`matmul64`] with `slots` copies of each L0 buffer region: 2 double-buffers, 1 serializes DMA and compute.
fn matmul64_buffered(p: &Profile, slots: u64) -> Program {
    let (bm, bn, ks) = (32, 32, 32);
    let [tm, tn, tk] = p.matrix.tile;
    let input = p.matrix.input_dtypes[0];
    let (slot_a, slot_b, slot_c) = (bm * ks * input.size(), ks * bn * input.size(), bm * bn * 4);
    let mut b = ProgramBuilder::new();
    let mut step = 0u64;
    for (blk, (bi, bj)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
        let cs = blk as u64 % slots;
        for kk in 0..DIM / ks {
            let s = step % slots;
            if step >= slots {
                b.wait_flag(Engine::Cube, Engine::DmaIn, 2 + s as u8);
            }
            let a_src = A_AT + ((bi * bm) * DIM + kk * ks) * 4;
            let b_src = B_AT + ((kk * ks) * DIM + bj * bn) * 4;
            b.load_2d(
                Access::buf("L0A", s * slot_a, input),
                Access::gm(a_src, DType::F32),
                bm,
                ks,
                DIM,
            )
            .load_2d(
                Access::buf("L0B", s * slot_b, input),
                Access::gm(b_src, DType::F32),
                ks,
                bn,
                DIM,
            )
            .sync(Engine::DmaIn, Engine::Cube, s as u8);
            if kk == 0 && blk as u64 >= slots {
                b.wait_flag(Engine::DmaOut, Engine::Cube, 6 + cs as u8);
            }
            b.mmad(
                Access::buf("L0C", cs * slot_c, DType::F32),
                Access::buf("L0A", s * slot_a, input),
                Access::buf("L0B", s * slot_b, input),
                [bm / tm, bn / tn, ks / tk],
                kk > 0,
            )
            .set_flag(Engine::Cube, Engine::DmaIn, 2 + s as u8);
            step += 1;
        }
        let c_dst = C_AT + ((bi * bm) * DIM + bj * bn) * 4;
        b.sync(Engine::Cube, Engine::DmaOut, 4 + cs as u8)
            .store_2d(
                Access::gm(c_dst, DType::F32),
                Access::buf("L0C", cs * slot_c, DType::F32),
                bm,
                bn,
                DIM,
            )
            .set_flag(Engine::DmaOut, Engine::Cube, 6 + cs as u8);
    }
    b.build()
}

const ROWS: u64 = 4;
const COLS: u64 = 64;

/// Softmax over each of 4 rows of 64 f32 values, in place in UB: max, subtract (per-row broadcast), exp, sum,
/// divide (per-row broadcast).
fn softmax(_p: &Profile) -> Program {
    let f = DType::F32;
    let (x, mx, sm) = (
        Access::buf("UB", 0, f),
        Access::buf("UB", 1024, f),
        Access::buf("UB", 1088, f),
    );
    let shape = [ROWS, COLS];
    let mut b = ProgramBuilder::new();
    b.load_2d(x.clone(), Access::gm(0, f), ROWS, COLS, COLS)
        .sync(Engine::DmaIn, Engine::Vector, 0)
        .reduce(ReduceOp::Max, mx.clone(), x.clone(), shape)
        .binary(BinaryOp::Sub, x.clone(), x.clone(), Operand::Row(mx), shape)
        .unary(UnaryOp::Exp, x.clone(), x.clone(), shape)
        .reduce(ReduceOp::Sum, sm.clone(), x.clone(), shape)
        .binary(BinaryOp::Div, x.clone(), x.clone(), Operand::Row(sm), shape)
        .sync(Engine::Vector, Engine::DmaOut, 1)
        .store_2d(Access::gm(4096, f), x, ROWS, COLS, COLS);
    b.build()
}

fn machine(profile: &str) -> Machine {
    Machine::new(Profile::by_name(profile).unwrap()).unwrap()
}

fn round(dtype: DType, v: f32) -> f32 {
    match dtype {
        DType::F16 => half::f16::from_f32(v).to_f32(),
        DType::BF16 => half::bf16::from_f32(v).to_f32(),
        _ => v,
    }
}

fn run_matmul(profile: &str) -> (Vec<f32>, Vec<f32>, Vec<f32>, SimReport, DType) {
    let mut m = machine(profile);
    let n = (DIM * DIM) as usize;
    let (a, b) = (values(n, 1), values(n, 2));
    m.write_global_values(A_AT, DType::F32, &a).unwrap();
    m.write_global_values(B_AT, DType::F32, &b).unwrap();
    let program = matmul64(m.profile());
    let input = m.profile().matrix.input_dtypes[0];
    let report = m.run(&program).unwrap_or_else(|t| panic!("{t}"));
    let c = m.read_global_values(C_AT, DType::F32, DIM * DIM).unwrap();
    (a, b, c, report, input)
}

#[test]
fn tiled_matmul_matches_the_reference_on_every_profile() {
    for profile in PROFILES {
        let (a, b, c, report, input) = run_matmul(profile);
        let d = DIM as usize;
        let eps = match input {
            DType::F16 => 2f64.powi(-11),
            _ => 2f64.powi(-8),
        };
        for i in 0..d {
            for j in 0..d {
                // Bit-exact: inputs rounded to the cube's dtype, products exact in f32, summed in ascending k.
                let mut s = 0f32;
                let mut exact = 0f64;
                for k in 0..d {
                    s += round(input, a[i * d + k]) * round(input, b[k * d + j]);
                    exact += f64::from(a[i * d + k]) * f64::from(b[k * d + j]);
                }
                let got = c[i * d + j];
                assert_eq!(got.to_bits(), s.to_bits(), "{profile} C[{i}][{j}]");
                // Within the input rounding bound: |ãb̃ - ab| ≤ (2ε + ε²)|a||b| with |a|, |b| ≤ 1, plus f32 sums.
                let tol = DIM as f64 * (2.0 * eps + eps * eps) + 1e-5;
                assert!(
                    (f64::from(got) - exact).abs() <= tol,
                    "{profile} C[{i}][{j}] = {got}, exact {exact}"
                );
            }
        }
        assert_eq!(report.macs, DIM * DIM * DIM);
        // Each of the 4 output blocks loads a 32×64 strip of A and a 64×32 strip of B, as f32.
        assert_eq!(report.bytes_loaded, 4 * 2 * (DIM / 2) * DIM * 4);
        assert_eq!(report.bytes_stored, DIM * DIM * 4);
        // Double buffering overlaps DMA with compute: the run is shorter than the sum of the busy times.
        let busy: u64 = report.engines.iter().map(|e| e.busy_cycles).sum();
        assert!(
            report.total_cycles < busy,
            "{profile}: {} cycles, {busy} busy",
            report.total_cycles
        );
    }
}

#[test]
fn softmax_rows_match_the_reference() {
    for profile in PROFILES {
        let mut m = machine(profile);
        let x: Vec<f32> = values((ROWS * COLS) as usize, 3)
            .iter()
            .map(|v| v * 8.0)
            .collect();
        m.write_global_values(0, DType::F32, &x).unwrap();
        m.run(&softmax(m.profile()))
            .unwrap_or_else(|t| panic!("{t}"));
        let y = m.read_global_values(4096, DType::F32, ROWS * COLS).unwrap();
        for (xr, yr) in x.chunks(COLS as usize).zip(y.chunks(COLS as usize)) {
            let max = xr
                .iter()
                .fold(f64::NEG_INFINITY, |a, &v| a.max(f64::from(v)));
            let sum: f64 = xr.iter().map(|&v| (f64::from(v) - max).exp()).sum();
            for (&xv, &yv) in xr.iter().zip(yr) {
                let want = (f64::from(xv) - max).exp() / sum;
                assert!(
                    (f64::from(yv) - want).abs() <= 1e-6 * want.max(1e-3),
                    "{profile}: {yv} vs {want}"
                );
            }
            let total: f32 = yr.iter().sum();
            assert!((total - 1.0).abs() < 1e-5);
        }
    }
}

/// Without event recording a run computes the same cycles and statistics.
#[test]
fn untraced_runs_report_the_same_numbers() {
    let (.., traced, _) = run_matmul("default");
    let mut m = machine("default");
    m.set_record_events(false);
    m.write_global_values(A_AT, DType::F32, &values((DIM * DIM) as usize, 1))
        .unwrap();
    m.write_global_values(B_AT, DType::F32, &values((DIM * DIM) as usize, 2))
        .unwrap();
    let untraced = m.run(&matmul64(m.profile())).unwrap();
    assert!(untraced.events.is_empty());
    assert_eq!(
        SimReport {
            events: traced.events.clone(),
            ..untraced
        },
        traced
    );
}

/// Double buffering hides the cube's work behind the DMA and the stores behind the next block: fewer cycles for the
/// same result than with one buffer of each.
#[test]
fn double_buffering_is_faster_than_single_buffering() {
    for profile in PROFILES {
        let mut totals = Vec::new();
        let mut results = Vec::new();
        for slots in [1, 2] {
            let mut m = machine(profile);
            m.write_global_values(A_AT, DType::F32, &values((DIM * DIM) as usize, 1))
                .unwrap();
            m.write_global_values(B_AT, DType::F32, &values((DIM * DIM) as usize, 2))
                .unwrap();
            let r = m
                .run(&matmul64_buffered(m.profile(), slots))
                .unwrap_or_else(|t| panic!("{t}"));
            totals.push(r.total_cycles);
            results.push(m.read_global_values(C_AT, DType::F32, DIM * DIM).unwrap());
        }
        assert_eq!(results[0], results[1], "{profile}");
        assert!(
            totals[1] < totals[0],
            "{profile}: double {} vs single {}",
            totals[1],
            totals[0]
        );
    }
}

/// Softmax on f16 data: converted to f16 by the load, widened to f32 on chip, and rounded back to f16 for the
/// store, which widens it to f32 in global memory. Every output is exactly an f16 value, within f16 rounding of the
/// softmax of the f16 inputs.
#[test]
fn f16_softmax_rounds_on_every_store() {
    let (h, f) = (DType::F16, DType::F32);
    let shape = [ROWS, COLS];
    let (xh, x, mx, sm) = (
        Access::buf("UB", 0, h),
        Access::buf("UB", 1024, f),
        Access::buf("UB", 2048, f),
        Access::buf("UB", 2112, f),
    );
    let mut b = ProgramBuilder::new();
    b.load_2d(xh.clone(), Access::gm(0, f), ROWS, COLS, COLS)
        .sync(Engine::DmaIn, Engine::Vector, 0)
        .cast(x.clone(), xh.clone(), shape)
        .reduce(ReduceOp::Max, mx.clone(), x.clone(), shape)
        .binary(BinaryOp::Sub, x.clone(), x.clone(), Operand::Row(mx), shape)
        .unary(UnaryOp::Exp, x.clone(), x.clone(), shape)
        .reduce(ReduceOp::Sum, sm.clone(), x.clone(), shape)
        .binary(BinaryOp::Div, x.clone(), x.clone(), Operand::Row(sm), shape)
        .cast(xh.clone(), x, shape)
        .sync(Engine::Vector, Engine::DmaOut, 1)
        .store_2d(Access::gm(4096, f), xh, ROWS, COLS, COLS);
    let mut m = machine("default");
    let input: Vec<f32> = values((ROWS * COLS) as usize, 5)
        .iter()
        .map(|v| v * 4.0)
        .collect();
    m.write_global_values(0, f, &input).unwrap();
    m.run(&b.build()).unwrap_or_else(|t| panic!("{t}"));
    let y = m.read_global_values(4096, f, ROWS * COLS).unwrap();
    for (xr, yr) in input.chunks(COLS as usize).zip(y.chunks(COLS as usize)) {
        let xr: Vec<f64> = xr.iter().map(|&v| f64::from(round(h, v))).collect();
        let max = xr.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = xr.iter().map(|v| (v - max).exp()).sum();
        for (xv, &yv) in xr.iter().zip(yr) {
            assert_eq!(round(h, yv), yv, "{yv} is not an f16 value");
            let want = (xv - max).exp() / sum;
            assert!(
                (f64::from(yv) - want).abs() <= want * 2f64.powi(-10),
                "{yv} vs {want}"
            );
        }
    }
}

/// The text of every shipped-profile program is golden, and text and binary forms round-trip.
#[test]
fn program_text_is_golden_and_round_trips() {
    let p = Profile::by_name("default").unwrap();
    let v = Profile::by_name("vector_heavy").unwrap();
    let programs = [
        ("matmul64_default.s", matmul64(&p)),
        ("matmul64_vector_heavy.s", matmul64(&v)),
        ("softmax_default.s", softmax(&p)),
    ];
    for (name, program) in programs {
        let printed = program.to_string();
        check_golden(name, &printed);
        let parsed = text::parse(&printed).unwrap();
        assert_eq!(parsed, program, "{name}: parse(print(p)) != p");
        assert_eq!(
            parsed.to_string(),
            printed,
            "{name}: print(parse(text)) != text"
        );
        let bytes = binary::encode(&program).unwrap();
        assert_eq!(
            binary::decode(&bytes).unwrap(),
            program,
            "{name}: decode(encode(p)) != p"
        );
    }
}

/// Cycle counts are deterministic and golden on both profiles.
#[test]
fn cycle_counts_are_golden() {
    let mut out = String::new();
    for profile in PROFILES {
        let (.., report, _) = run_matmul(profile);
        let (.., again, _) = run_matmul(profile);
        assert_eq!(report, again, "two runs of the same program differ");
        let mut m = machine(profile);
        m.write_global_values(0, DType::F32, &values((ROWS * COLS) as usize, 3))
            .unwrap();
        let sm = m.run(&softmax(m.profile())).unwrap();
        for (name, r) in [("matmul64", &report), ("softmax", &sm)] {
            out += &format!("{profile} {name}: {}", r.summary(m.profile().clock_mhz));
        }
    }
    check_golden("cycles.txt", &out);
}

/// A load, an mmad and a store, timed by hand from the profile numbers.
#[test]
fn timing_follows_the_profile_formulas() {
    let text = "\
load dst=L0A[0]:f16 src=gm[0]:f32 shape=[16,16] dst_strides=[16,1] src_strides=[16,1]
load dst=L0B[0]:f16 src=gm[1024]:f32 shape=[16,16] dst_strides=[16,1] src_strides=[16,1]
set_flag src=dma_in dst=cube id=0
wait_flag src=dma_in dst=cube id=0
mmad c=L0C[0]:f32 a=L0A[0]:f16 b=L0B[0]:f16 tiles=[1,1,1] accumulate=false
set_flag src=cube dst=dma_out id=0
wait_flag src=cube dst=dma_out id=0
store dst=gm[4096]:f32 src=L0C[0]:f32 shape=[16,16] dst_strides=[16,1] src_strides=[16,1]
";
    let mut m = machine("default");
    let r = m.run(&text::parse(text).unwrap()).unwrap();
    // default: DMA 64 + 1024 B / min(64, 128) B/cycle = 80 cycles; one tile at 1 cycle.
    let spans: Vec<(usize, u64, u64)> = r
        .events
        .iter()
        .map(|e| (e.index, e.start, e.cycles))
        .collect();
    assert_eq!(
        spans,
        [
            (0, 0, 80),
            (1, 80, 80),
            (2, 160, 0),
            (3, 160, 0),
            (4, 160, 1),
            (5, 161, 0),
            (6, 161, 0),
            (7, 161, 80)
        ]
    );
    assert_eq!(r.total_cycles, 241);

    // A load and an independent store overlap with two DMA channels and serialize with one.
    let text = "\
load dst=UB[0]:f32 src=gm[0]:f32 shape=[96] dst_strides=[1] src_strides=[1]
store dst=gm[4096]:f32 src=UB[1024]:f32 shape=[96] dst_strides=[1] src_strides=[1]
";
    let program = text::parse(text).unwrap();
    // default: 64 + 384/64 = 70 each, in parallel.
    assert_eq!(machine("default").run(&program).unwrap().total_cycles, 70);
    // vector_heavy: 100 + 384/96 = 104 each, one channel.
    assert_eq!(
        machine("vector_heavy").run(&program).unwrap().total_cycles,
        208
    );

    let mut m = machine("default");
    let r = m
        .run(&text::parse("vec.exp dst=UB[0]:f32 src=UB[0]:f32 shape=[3,100]").unwrap())
        .unwrap();
    // ceil(300 / 128) passes × 4 cycles (transcendental).
    assert_eq!(r.total_cycles, 12);
}

#[test]
fn trace_is_golden() {
    let text = "\
load dst=L0A[0]:f16 src=gm[0]:f32 shape=[16,16] dst_strides=[16,1] src_strides=[16,1]
load dst=L0B[0]:f16 src=gm[1024]:f32 shape=[16,16] dst_strides=[16,1] src_strides=[16,1]
set_flag src=dma_in dst=cube id=0
wait_flag src=dma_in dst=cube id=0
mmad c=L0C[0]:f32 a=L0A[0]:f16 b=L0B[0]:f16 tiles=[1,1,1] accumulate=false
set_flag src=cube dst=vector id=0
wait_flag src=cube dst=vector id=0
vec.relu dst=L0C[0]:f32 src=L0C[0]:f32 shape=[16,16]
barrier
store dst=gm[4096]:f32 src=L0C[0]:f32 shape=[16,16] dst_strides=[16,1] src_strides=[16,1]
";
    let mut m = machine("default");
    let r = m.run(&text::parse(text).unwrap()).unwrap();
    let mut out = Vec::new();
    trace::write_chrome_trace(&r, m.profile(), &mut out).unwrap();
    let json = String::from_utf8(out).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let events = value["traceEvents"].as_array().unwrap();
    // One named track per engine, and every instruction on its engine's track.
    let tracks: Vec<&str> = events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .filter_map(|e| e["args"]["name"].as_str())
        .collect();
    assert_eq!(tracks, ["programs", "dma_in", "dma_out", "cube", "vector"]);
    // Four work instructions plus the program's own slice.
    assert_eq!(events.iter().filter(|e| e["ph"] == "X").count(), 6);
    check_golden("small_trace.json", &json);
}

/// Several runs in one trace are laid end to end, each under its own slice on the `programs` track.
#[test]
fn trace_builder_lays_runs_end_to_end() {
    let (.., first, _) = run_matmul("default");
    let p = Profile::by_name("default").unwrap();
    let mut m = machine("default");
    let second = m.run(&softmax(&p)).unwrap();
    let mut t = trace::TraceBuilder::new(&p);
    t.add("matmul", &first).add("softmax", &second);
    let json = t.finish();
    assert_eq!(
        json["otherData"]["total_cycles"],
        first.total_cycles + second.total_cycles
    );
    let events = json["traceEvents"].as_array().unwrap();
    let programs: Vec<(&str, u64)> = events
        .iter()
        .filter(|e| e["cat"] == "program")
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                e["args"]["start_cycle"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(programs, [("matmul", 0), ("softmax", first.total_cycles)]);
    // The softmax has one load, the latest of all, and it starts where the matmul ended.
    let softmax_load = events
        .iter()
        .filter(|e| e["name"] == "load")
        .map(|e| e["args"]["start_cycle"].as_u64().unwrap())
        .max();
    assert_eq!(softmax_load, Some(first.total_cycles));
}

/// At a clock where cycles are fractional nanoseconds, slices on one track still never overlap.
#[test]
fn trace_slices_on_a_track_do_not_overlap() {
    let (.., report, _) = run_matmul("vector_heavy");
    let p = Profile::by_name("vector_heavy").unwrap();
    let trace = trace::chrome_trace(&report, &p);
    let mut by_track: std::collections::BTreeMap<u64, Vec<(i64, i64)>> = Default::default();
    for e in trace["traceEvents"].as_array().unwrap() {
        if e["ph"] == "X" {
            let ns = |k: &str| (e[k].as_f64().unwrap() * 1000.0).round() as i64;
            by_track
                .entry(e["tid"].as_u64().unwrap())
                .or_default()
                .push((ns("ts"), ns("dur")));
        }
    }
    assert_eq!(
        by_track.len(),
        4,
        "programs, dma_in, dma_out and cube have slices"
    );
    for slices in by_track.values_mut() {
        slices.sort();
        for w in slices.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{w:?}");
        }
    }
}

/// Broken programs trap with the instruction, the engine, the address range and the reason.
#[test]
fn broken_programs_trap_with_clear_messages() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "default",
            "load dst=UB[0]:f32 src=gm[1073741312]:f32 shape=[2,128] dst_strides=[128,1] src_strides=[256,1]",
            "trap at instruction 0 on dma_in (`load dst=UB[0]:f32 src=gm[1073741312]:f32 shape=[2,128] \
             dst_strides=[128,1] src_strides=[256,1]`): gm bytes [1073741312, 1073742848) are out of bounds \
             (size 1073741824)",
        ),
        (
            "default",
            "barrier\nload dst=L0A[65280]:f16 src=gm[0]:f32 shape=[16,16] dst_strides=[16,1] src_strides=[16,1]",
            "trap at instruction 1 on dma_in (`load dst=L0A[65280]:f16 src=gm[0]:f32 shape=[16,16] \
             dst_strides=[16,1] src_strides=[16,1]`): L0A bytes [65280, 65792) are out of bounds (size 65536)",
        ),
        (
            "default",
            // The mmad's set_flag is there, but nobody waits for it: the cube reads L0A while the DMA writes it.
            "load dst=L0A[0]:f16 src=gm[0]:f32 shape=[16,16] dst_strides=[16,1] src_strides=[16,1]\n\
             load dst=L0B[0]:f16 src=gm[0]:f32 shape=[16,16] dst_strides=[16,1] src_strides=[16,1]\n\
             set_flag src=dma_in dst=cube id=0\n\
             mmad c=L0C[0]:f32 a=L0A[0]:f16 b=L0B[0]:f16 tiles=[1,1,1] accumulate=false",
            "trap at instruction 3 on cube (`mmad c=L0C[0]:f32 a=L0A[0]:f16 b=L0B[0]:f16 tiles=[1,1,1] \
             accumulate=false`): race on L0A bytes [0, 512): this read and the write by instruction 0 (dma_in) \
             are not ordered by set_flag/wait_flag or barrier",
        ),
        (
            "default",
            // The store reads UB while the vector unit may still be writing it. Both could start at cycle 0; the
            // store runs first (engine order breaks the tie), so the fill is the access that finds the race.
            "vec.fill dst=UB[0]:f32 value=#1 shape=[1,64]\n\
             store dst=gm[0]:f32 src=UB[128]:f32 shape=[32] dst_strides=[1] src_strides=[1]",
            "trap at instruction 0 on vector (`vec.fill dst=UB[0]:f32 value=#1 shape=[1,64]`): race on UB bytes \
             [128, 256): this write and the read by instruction 1 (dma_out) are not ordered by set_flag/wait_flag \
             or barrier",
        ),
        (
            "default",
            "wait_flag src=cube dst=vector id=1\nvec.fill dst=UB[0]:f32 value=#1 shape=[1,64]",
            "trap at instruction 0 on vector (`wait_flag src=cube dst=vector id=1`): deadlock: vector waits for a \
             set_flag that never fires (instruction 0: `wait_flag src=cube dst=vector id=1`)",
        ),
        (
            "vector_heavy",
            "load dst=UB[32]:f32 src=gm[0]:f32 shape=[8] dst_strides=[1] src_strides=[1]",
            "trap at instruction 0 on dma_in (`load dst=UB[32]:f32 src=gm[0]:f32 shape=[8] dst_strides=[1] \
             src_strides=[1]`): UB offset 32 is not aligned to 64 bytes",
        ),
        (
            "vector_heavy",
            "mmad c=L0C[0]:f32 a=L0A[0]:f16 b=L0B[0]:f16 tiles=[1,1,1] accumulate=false",
            "trap at instruction 0 on cube (`mmad c=L0C[0]:f32 a=L0A[0]:f16 b=L0B[0]:f16 tiles=[1,1,1] \
             accumulate=false`): unsupported by this profile: matrix unit input dtype f16",
        ),
        (
            "default",
            "vec.exp dst=L0A[0]:f32 src=L0A[0]:f32 shape=[1,8]",
            "trap at instruction 0 on vector (`vec.exp dst=L0A[0]:f32 src=L0A[0]:f32 shape=[1,8]`): vector cannot \
             access L0A in this profile",
        ),
        (
            "default",
            "vec.div dst=UB[0]:i32 a=UB[0]:i32 b=#2 shape=[1,8]",
            "trap at instruction 0 on vector (`vec.div dst=UB[0]:i32 a=UB[0]:i32 b=#2 shape=[1,8]`): bad operands: \
             vec.div is not defined on i32",
        ),
        (
            "default",
            "vec.fill dst=UB[0]:f32 value=#1 shape=[1,8]\nset_flag src=cube dst=cube id=0",
            "trap at instruction 1 on cube (`set_flag src=cube dst=cube id=0`): bad operands: a flag's src and dst \
             must differ",
        ),
    ];
    for (profile, text, want) in cases {
        let program = text::parse(text).unwrap();
        match machine(profile).run(&program) {
            Ok(r) => panic!("{text:?} ran to completion in {} cycles", r.total_cycles),
            Err(trap) => assert_eq!(trap.to_string(), *want),
        }
    }
}

/// The same two accesses, ordered by a flag or by a barrier, do not trap.
#[test]
fn synchronized_accesses_do_not_trap() {
    for sync in [
        "set_flag src=vector dst=dma_out id=0\nwait_flag src=vector dst=dma_out id=0",
        "barrier",
    ] {
        let text = format!(
            "vec.fill dst=UB[0]:f32 value=#1 shape=[1,64]\n{sync}\n\
             store dst=gm[0]:f32 src=UB[128]:f32 shape=[32] dst_strides=[1] src_strides=[1]"
        );
        let mut m = machine("default");
        m.run(&text::parse(&text).unwrap())
            .unwrap_or_else(|t| panic!("{t}"));
        assert_eq!(
            m.read_global_values(0, DType::F32, 32).unwrap(),
            vec![1.0; 32]
        );
    }
}

/// i8 inputs accumulate in wrapping i32.
#[test]
fn int8_matmul_accumulates_in_i32() {
    let mut m = machine("default");
    // A is all 127, B is all -128 (written as i8), K = 16: each C element is 16 · 127 · -128 = -260096.
    m.write_global_values(0, DType::I8, &[127.0; 256]).unwrap();
    m.write_global_values(256, DType::I8, &[-128.0; 256])
        .unwrap();
    let text = "\
load dst=L0A[0]:i8 src=gm[0]:i8 shape=[256] dst_strides=[1] src_strides=[1]
load dst=L0B[0]:i8 src=gm[256]:i8 shape=[256] dst_strides=[1] src_strides=[1]
barrier
mmad c=L0C[0]:i32 a=L0A[0]:i8 b=L0B[0]:i8 tiles=[1,1,1] accumulate=false
mmad c=L0C[0]:i32 a=L0A[0]:i8 b=L0B[0]:i8 tiles=[1,1,1] accumulate=true
barrier
store dst=gm[1024]:i32 src=L0C[0]:i32 shape=[256] dst_strides=[1] src_strides=[1]
";
    m.run(&text::parse(text).unwrap()).unwrap();
    let c = m.read_global(1024, 1024).unwrap();
    for chunk in c.chunks(4) {
        assert_eq!(
            i32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
            -520192
        );
    }
}

/// A tiny deterministic generator for the mutation test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn pick(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn value(&mut self) -> u64 {
        const INTERESTING: [u64; 10] =
            [0, 1, 2, 7, 16, 64, 1 << 20, 1 << 40, u64::MAX / 3, u64::MAX];
        INTERESTING[self.pick(INTERESTING.len())]
    }
}

fn mutate(instr: &mut jiuzhou_target_vnpu::Instr, rng: &mut Rng) {
    use jiuzhou_target_vnpu::{Instr, VectorInstr};
    let v = rng.value();
    match instr {
        Instr::Load(d) | Instr::Store(d) => match rng.pick(5) {
            0 => d.dst.offset = v,
            1 => d.src.offset = v,
            2 => {
                let i = rng.pick(d.shape.len());
                d.shape[i] = v;
            }
            3 => {
                let i = rng.pick(d.src_strides.len());
                d.src_strides[i] = v;
            }
            _ => d.dst_strides.push(v),
        },
        Instr::Mmad(m) => match rng.pick(3) {
            0 => m.c.offset = v,
            1 => m.tiles[rng.pick(3)] = v,
            _ => m.a.dtype = DType::I8,
        },
        Instr::Vector(VectorInstr::Binary { shape, b, .. }) => {
            if rng.pick(2) == 0 {
                shape[rng.pick(2)] = v;
            } else {
                *b = Operand::Imm(v as f64 / 3.0);
            }
        }
        Instr::Vector(
            VectorInstr::Unary { shape, .. }
            | VectorInstr::Reduce { shape, .. }
            | VectorInstr::Cast { shape, .. }
            | VectorInstr::Fill { shape, .. },
        ) => shape[rng.pick(2)] = v,
        Instr::SetFlag(f) | Instr::WaitFlag(f) => f.id = (v % 9) as u8,
        Instr::Barrier => {}
    }
}

/// Mutated programs (huge shapes, overflowing offsets and strides, wrong dtypes, mismatched flags) run to a
/// result or a trap; none panics, hangs or allocates without bound.
#[test]
fn mutated_programs_never_panic() {
    let mut rng = Rng(7);
    for profile in PROFILES {
        let p = Profile::by_name(profile).unwrap();
        for base in [matmul64(&p), softmax(&p)] {
            for _ in 0..150 {
                let mut program = base.clone();
                for _ in 0..1 + rng.pick(3) {
                    let i = rng.pick(program.instrs.len());
                    mutate(&mut program.instrs[i], &mut rng);
                }
                let _ = Machine::new(p.clone()).unwrap().run(&program);
                // The text form of a mutated program parses back to the same program when it is well formed.
                if let Ok(parsed) = text::parse(&program.to_string()) {
                    assert_eq!(parsed.to_string(), program.to_string());
                }
            }
        }
    }
}

/// Dropping any one `wait_flag` from the double-buffered matmul leaves a race (the reuse of an L0 slot, or the
/// read of a block the DMA is still writing) that the simulator names.
#[test]
fn matmul_without_any_one_wait_flag_traps_with_a_race() {
    use jiuzhou_target_vnpu::Instr;
    let p = Profile::by_name("default").unwrap();
    let program = matmul64(&p);
    let waits: Vec<usize> = (0..program.instrs.len())
        .filter(|&i| matches!(program.instrs[i], Instr::WaitFlag(_)))
        .collect();
    // 8 k-steps wait for their loads, 6 for a free slot, 4 blocks for C, 2 for a free C slot.
    assert_eq!(waits.len(), 20);
    for i in waits {
        let mut broken = program.clone();
        let removed = broken.instrs.remove(i);
        let mut m = machine("default");
        match m.run(&broken) {
            Ok(_) => panic!("without `{removed}` (instruction {i}) the matmul ran"),
            Err(trap) => assert!(
                matches!(*trap.kind, jiuzhou_target_vnpu::TrapKind::Race { .. }),
                "without `{removed}`: {trap}"
            ),
        }
    }
}

/// A profile built in code (bypassing TOML validation) cannot make the machine allocate without bound or divide by
/// zero.
#[test]
fn hand_built_profiles_are_checked_by_the_machine() {
    let mut p = Profile::by_name("default").unwrap();
    p.buffers[0].size_bytes = u64::MAX;
    assert!(
        Machine::new(p.clone())
            .unwrap_err()
            .to_string()
            .starts_with("buffer `L0A` has 18446744073709551615 bytes")
    );
    let mut p = Profile::by_name("default").unwrap();
    p.dma.bytes_per_cycle = 0;
    p.vector.lanes = 0;
    let text = "load dst=UB[0]:f32 src=gm[0]:f32 shape=[8] dst_strides=[1] src_strides=[1]\nbarrier\nvec.exp dst=UB[0]:f32 src=UB[0]:f32 shape=[1,8]";
    let r = Machine::new(p)
        .unwrap()
        .run(&text::parse(text).unwrap())
        .unwrap();
    assert_eq!(r.total_cycles, 64 + 32 + 8 * 4);
}

/// Engines may read the same bytes concurrently.
#[test]
fn concurrent_reads_do_not_race() {
    let text = "\
store dst=gm[0]:f32 src=UB[0]:f32 shape=[64] dst_strides=[1] src_strides=[1]
vec.exp dst=UB[256]:f32 src=UB[0]:f32 shape=[1,64]
";
    machine("default")
        .run(&text::parse(text).unwrap())
        .unwrap_or_else(|t| panic!("{t}"));
}
