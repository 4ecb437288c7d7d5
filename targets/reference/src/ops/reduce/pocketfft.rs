//! numpy's single-precision inverse complex FFT, step for step.
//!
//! `numpy.fft.ifft` of `complex64` data runs pocketfft's mixed-radix algorithm in f32, and the ONNX node tests keep
//! its rounding in their expected outputs: entries that are exactly 0 come out as ±2⁻²² or so, more than the
//! absolute tolerance of the comparison. To agree with those tests, inverse DFTs of f32 data whose length factors
//! into pocketfft's radix-2, -3, -4 and -5 passes repeat its operations in the same order (each f32 operation rounds
//! once, as in C++ without fused multiply-adds). Other lengths use the plain sum in f64.

/// A complex number as (real, imaginary).
type C = (f32, f32);

// The radix-3 and radix-5 constants, rounded to f32 where they are used, as pocketfft's `T0(...L)` literals are.
const SIN_60: f64 = 0.866_025_403_784_438_6;
const COS_72: f64 = 0.309_016_994_374_947_45;
const SIN_72: f64 = 0.951_056_516_295_153_5;
const COS_36: f64 = 0.809_016_994_374_947_5;
const SIN_36: f64 = 0.587_785_252_292_473_1;

fn add(a: C, b: C) -> C {
    (a.0 + b.0, a.1 + b.1)
}

fn sub(a: C, b: C) -> C {
    (a.0 - b.0, a.1 - b.1)
}

/// `v · w` (pocketfft's `special_mul` for backward transforms).
fn mul(v: C, w: C) -> C {
    (v.0 * w.0 - v.1 * w.1, v.0 * w.1 + v.1 * w.0)
}

/// pocketfft's factorization of `n` (radix 4 first, a radix 2 moved to the front, then odd factors), or `None` if
/// it needs a pass this module does not repeat (8, 7, 11 and larger primes).
fn factorize(n: usize) -> Option<Vec<usize>> {
    let mut len = n;
    if len.is_multiple_of(8) {
        return None;
    }
    let mut f = Vec::new();
    while len.is_multiple_of(4) {
        f.push(4);
        len /= 4;
    }
    if len.is_multiple_of(2) {
        len /= 2;
        f.push(2);
        let last = f.len() - 1;
        f.swap(0, last);
    }
    let mut d = 3;
    while d * d <= len {
        while len.is_multiple_of(d) {
            f.push(d);
            len /= d;
        }
        d += 2;
    }
    if len > 1 {
        f.push(len);
    }
    f.iter().all(|&p| matches!(p, 2..=5)).then_some(f)
}

/// `exp(2πi·idx/n)`, computed in f64 and rounded to f32 as pocketfft does.
fn root(n: usize, idx: usize) -> C {
    let a = 2.0 * std::f64::consts::PI * idx as f64 / n as f64;
    (a.cos() as f32, a.sin() as f32)
}

/// One radix-`ip` pass over `cc` into `ch` (pocketfft's `pass2` ... `pass5`, backward).
fn pass(ip: usize, ido: usize, l1: usize, cc: &[C], ch: &mut [C], wa: &[C]) {
    let cci = |a: usize, b: usize, c: usize| cc[a + ido * (b + ip * c)];
    let chi = |a: usize, b: usize, c: usize| a + ido * (b + l1 * c);
    let w = |x: usize, i: usize| wa[i - 1 + x * (ido - 1)];
    // Outputs 1.. of a butterfly at position i: twiddled except at i = 0.
    let tw = |v: C, x: usize, i: usize| if i == 0 { v } else { mul(v, w(x, i)) };
    for k in 0..l1 {
        for i in 0..ido {
            match ip {
                2 => {
                    let (a, b) = (cci(i, 0, k), cci(i, 1, k));
                    ch[chi(i, k, 0)] = add(a, b);
                    ch[chi(i, k, 1)] = tw(sub(a, b), 0, i);
                }
                3 => {
                    let (tw1r, tw1i) = (-0.5f32, SIN_60 as f32);
                    let t0 = cci(i, 0, k);
                    let (t1, t2) = (
                        add(cci(i, 1, k), cci(i, 2, k)),
                        sub(cci(i, 1, k), cci(i, 2, k)),
                    );
                    ch[chi(i, k, 0)] = add(t0, t1);
                    let ca = add(t0, (t1.0 * tw1r, t1.1 * tw1r));
                    let cb = (-t2.1 * tw1i, t2.0 * tw1i);
                    ch[chi(i, k, 1)] = tw(add(ca, cb), 0, i);
                    ch[chi(i, k, 2)] = tw(sub(ca, cb), 1, i);
                }
                4 => {
                    let (t2, t1) = (
                        add(cci(i, 0, k), cci(i, 2, k)),
                        sub(cci(i, 0, k), cci(i, 2, k)),
                    );
                    let (t3, t4) = (
                        add(cci(i, 1, k), cci(i, 3, k)),
                        sub(cci(i, 1, k), cci(i, 3, k)),
                    );
                    let t4 = (-t4.1, t4.0);
                    ch[chi(i, k, 0)] = add(t2, t3);
                    ch[chi(i, k, 1)] = tw(add(t1, t4), 0, i);
                    ch[chi(i, k, 2)] = tw(sub(t2, t3), 1, i);
                    ch[chi(i, k, 3)] = tw(sub(t1, t4), 2, i);
                }
                _ => {
                    let (tw1r, tw1i) = (COS_72 as f32, SIN_72 as f32);
                    let (tw2r, tw2i) = (-COS_36 as f32, SIN_36 as f32);
                    let t0 = cci(i, 0, k);
                    let (t1, t4) = (
                        add(cci(i, 1, k), cci(i, 4, k)),
                        sub(cci(i, 1, k), cci(i, 4, k)),
                    );
                    let (t2, t3) = (
                        add(cci(i, 2, k), cci(i, 3, k)),
                        sub(cci(i, 2, k), cci(i, 3, k)),
                    );
                    ch[chi(i, k, 0)] = (t0.0 + t1.0 + t2.0, t0.1 + t1.1 + t2.1);
                    for (u1, u2, twar, twbr, twai, twbi) in [
                        (1, 4, tw1r, tw2r, tw1i, tw2i),
                        (2, 3, tw2r, tw1r, tw2i, -tw1i),
                    ] {
                        let ca = (
                            t0.0 + twar * t1.0 + twbr * t2.0,
                            t0.1 + twar * t1.1 + twbr * t2.1,
                        );
                        let cb = (-(twai * t4.1 + twbi * t3.1), twai * t4.0 + twbi * t3.0);
                        ch[chi(i, k, u1)] = tw(add(ca, cb), u1 - 1, i);
                        ch[chi(i, k, u2)] = tw(sub(ca, cb), u2 - 1, i);
                    }
                }
            }
        }
    }
}

/// `fct · Σₜ x[t]·exp(2πi·k·t/n)` for every k, computed as numpy's f32 `ifft` computes it; `None` for lengths
/// whose factors this module does not handle.
pub fn backward(x: &[C], fct: f32) -> Option<Vec<C>> {
    let n = x.len();
    if n <= 1 {
        return Some(x.iter().map(|&(re, im)| (re * fct, im * fct)).collect());
    }
    let factors = factorize(n)?;
    let mut p1 = x.to_vec();
    let mut p2 = vec![(0.0, 0.0); n];
    let mut l1 = 1;
    for ip in factors {
        let ido = n / (l1 * ip);
        let mut wa = vec![(0.0, 0.0); (ip - 1) * (ido - 1)];
        for j in 1..ip {
            for i in 1..ido {
                wa[(j - 1) * (ido - 1) + i - 1] = root(n, j * l1 * i);
            }
        }
        pass(ip, ido, l1, &p1, &mut p2, &wa);
        std::mem::swap(&mut p1, &mut p2);
        l1 *= ip;
    }
    if fct != 1.0 {
        for v in &mut p1 {
            *v = (v.0 * fct, v.1 * fct);
        }
    }
    Some(p1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factorizations_follow_pocketfft() {
        assert_eq!(factorize(10), Some(vec![2, 5]));
        assert_eq!(factorize(12), Some(vec![4, 3]));
        assert_eq!(factorize(6), Some(vec![2, 3]));
        assert_eq!(factorize(16), None);
        assert_eq!(factorize(7), None);
    }

    #[test]
    fn matches_numpy_ifft_of_complex64() {
        // numpy.fft.ifft(np.arange(10, dtype=np.complex64)): the Nyquist term carries pocketfft's rounding.
        let x: Vec<C> = (0..10).map(|t| (t as f32, 0.0)).collect();
        let y = backward(&x, 0.1).unwrap();
        assert_eq!(y[0], (4.5, 0.0));
        assert_eq!(y[5], (-0.5, -2.384_185_8e-8));
        let x: Vec<C> = (0..10).map(|t| (10.0 * t as f32, 0.0)).collect();
        let y = backward(&x, 0.1).unwrap();
        assert_eq!(y[5], (-5.0, 1.907_348_7e-7));
        assert_eq!(y[4].0, -5.000_000_5);
    }
}
