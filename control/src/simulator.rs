//! The traffic simulator: real frames through the ring device for every offloaded
//! session, so counters and closings come from the dataplane itself.
//!
//! Each accepted session gets a rate of its own and a lifetime; data frames go both
//! ways (from the in_lif port toward the destination, from the out_lif port back),
//! with the lif's VLAN tag when the lif carries one. At the end of its life a session
//! ends by FIN from both sides and a last ACK, by a RST, or by going quiet until the
//! device times it out. Everything the device sends out of a ring port is drained
//! and counted here, so the rings never fill. Without simulation the same thread only
//! drains (`drain_only`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use dataplane::packet::{PacketBuf, PacketPool};
use dataplane::session::SessionSpec;
use dataplane::wire::frame::{self, FrameSpec};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::SimulateConfig;
use crate::device::RingEnd;

const FIN: u8 = 0x01;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Fin,
    Rst,
    Idle,
}

/// Where a simulated session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Data,
    /// FIN from the source sent; FIN from the destination next.
    FinIn,
    /// Both FINs sent; the last ACK next.
    FinOut,
    Done,
}

struct SimSession {
    spec: SessionSpec,
    /// Ring ends of the in and out lif.
    in_end: usize,
    out_end: usize,
    gap: Duration,
    end_at: Instant,
    ending: Ending,
    step: Step,
    sent: u64,
}

/// Frames the simulator sent and drained.
#[derive(Debug, Default, Clone)]
pub struct SimulatorReport {
    pub sessions: u64,
    pub frames_sent: u64,
    pub frames_unsent: u64,
    pub frames_drained: u64,
}

pub struct Simulator {
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<SimulatorReport>>,
}

impl Simulator {
    /// Starts simulating; send accepted sessions on the returned channel.
    pub fn start(cfg: SimulateConfig, ends: Vec<RingEnd>) -> (Simulator, Sender<SessionSpec>) {
        let (tx, rx) = crossbeam_channel::bounded(1 << 16);
        (Simulator::spawn(Some((cfg, rx)), ends), tx)
    }

    /// Only drains what the device sends out of the ring ports.
    pub fn drain_only(ends: Vec<RingEnd>) -> Simulator {
        Simulator::spawn(None, ends)
    }

    fn spawn(
        sim: Option<(SimulateConfig, Receiver<SessionSpec>)>,
        ends: Vec<RingEnd>,
    ) -> Simulator {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let join = std::thread::Builder::new()
            .name("simulator".into())
            .spawn(move || run(sim, ends, &s))
            .expect("spawn simulator thread");
        Simulator {
            stop,
            join: Some(join),
        }
    }

    pub fn stop(mut self) -> SimulatorReport {
        self.stop.store(true, Ordering::Release);
        let r = self
            .join
            .take()
            .and_then(|j| j.join().ok())
            .unwrap_or_default();
        tracing::info!(?r, "simulator stopped");
        r
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

fn drain(ends: &mut [RingEnd], scratch: &mut Vec<PacketBuf>) -> u64 {
    let mut n = 0;
    for e in ends.iter_mut() {
        n += e.peer.collect(scratch) as u64;
        scratch.clear();
    }
    n
}

fn run(
    sim: Option<(SimulateConfig, Receiver<SessionSpec>)>,
    mut ends: Vec<RingEnd>,
    stop: &AtomicBool,
) -> SimulatorReport {
    let mut report = SimulatorReport::default();
    let mut scratch = Vec::with_capacity(1024);
    let Some((cfg, offers)) = sim else {
        while !stop.load(Ordering::Acquire) {
            let n = drain(&mut ends, &mut scratch);
            report.frames_drained += n;
            if n == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        return report;
    };
    let pool = match PacketPool::new(8192, 2048) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("simulator cannot reserve buffers: {e}; it only drains");
            return run(None, ends, stop);
        }
    };
    let mut rng = SmallRng::seed_from_u64(cfg.seed);
    let by_lif: HashMap<u16, usize> = ends
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.lif.map(|l| (l, i)))
        .collect();
    let mut sessions: HashMap<u64, SimSession> = HashMap::new();
    // (due, generation, id): a session id can come back after it ended.
    let mut due: BinaryHeap<Reverse<(Instant, u64, u64)>> = BinaryHeap::new();
    let mut generation: HashMap<u64, u64> = HashMap::new();
    let mut gen_counter = 0u64;
    // Global pacing: at most packets_per_second frames, in small bursts.
    let frame_gap = Duration::from_secs_f64(1.0 / cfg.packets_per_second as f64);
    let mut next_free = Instant::now();

    while !stop.load(Ordering::Acquire) {
        while let Ok(spec) = offers.try_recv() {
            let (Some(&in_end), Some(&out_end)) = (
                by_lif.get(&((spec.in_lif & 0xffff) as u16)),
                by_lif.get(&((spec.out_lif & 0xffff) as u16)),
            ) else {
                continue;
            };
            let now = Instant::now();
            let life = rng.gen_range(cfg.min_lifetime_s..=cfg.max_lifetime_s);
            let roll = rng.gen_range(0..100u32);
            let ending = if roll < cfg.fin_percent as u32 {
                Ending::Fin
            } else if roll < (cfg.fin_percent + cfg.rst_percent) as u32 {
                Ending::Rst
            } else {
                Ending::Idle
            };
            let ending = if spec.proto != 6 && ending != Ending::Idle {
                Ending::Idle
            } else {
                ending
            };
            // Rates vary over two orders of magnitude; a session never idles long
            // enough to time out while it is meant to be alive.
            let timeout = if spec.timeout_s == 0 {
                30.0
            } else {
                spec.timeout_s as f64
            };
            let gap_s = (10f64.powf(rng.gen_range(-2.0..0.0))).min(timeout / 3.0);
            gen_counter += 1;
            generation.insert(spec.id, gen_counter);
            due.push(Reverse((now, gen_counter, spec.id)));
            sessions.insert(
                spec.id,
                SimSession {
                    spec,
                    in_end,
                    out_end,
                    gap: Duration::from_secs_f64(gap_s),
                    end_at: now + Duration::from_secs_f64(life),
                    ending,
                    step: Step::Data,
                    sent: 0,
                },
            );
            report.sessions += 1;
        }

        report.frames_drained += drain(&mut ends, &mut scratch);

        let now = Instant::now();
        let mut budget = 64;
        while budget > 0 && next_free <= now {
            let Some(&Reverse((at, gen, id))) = due.peek() else {
                break;
            };
            if at > now {
                break;
            }
            due.pop();
            if generation.get(&id) != Some(&gen) {
                continue;
            }
            let Some(s) = sessions.get_mut(&id) else {
                continue;
            };
            let (from_in, flags, next) = next_frame(s, now, &mut rng);
            if let Some(flags) = flags {
                let sent = send(&mut ends, &pool, s, from_in, flags, cfg.payload_bytes);
                if sent {
                    report.frames_sent += 1;
                    s.sent += 1;
                } else {
                    report.frames_unsent += 1;
                }
                next_free += frame_gap;
                if next_free < now {
                    next_free = now;
                }
                budget -= 1;
            }
            match next {
                Some(t) => due.push(Reverse((t, gen, id))),
                None => {
                    sessions.remove(&id);
                    generation.remove(&id);
                }
            }
        }

        let wake = due
            .peek()
            .map(|Reverse((t, _, _))| (*t).max(next_free))
            .unwrap_or(now + Duration::from_millis(5));
        let nap = wake
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(5));
        if !nap.is_zero() {
            std::thread::sleep(nap);
        }
    }
    report
}

/// The next frame of a session: (from the in side?, TCP flags or None for nothing to
/// send now, when to come back or None when the session is finished).
fn next_frame(
    s: &mut SimSession,
    now: Instant,
    rng: &mut SmallRng,
) -> (bool, Option<u8>, Option<Instant>) {
    let tcp = s.spec.proto == 6;
    let data = if tcp { ACK | PSH } else { 0 };
    let soon = now + Duration::from_millis(20);
    match s.step {
        Step::Data if now < s.end_at => {
            let jitter = rng.gen_range(0.5..1.5);
            (
                rng.gen_bool(0.5),
                Some(data),
                Some(now + s.gap.mul_f64(jitter)),
            )
        }
        Step::Data => match s.ending {
            Ending::Fin => {
                s.step = Step::FinIn;
                (true, Some(FIN | ACK), Some(soon))
            }
            Ending::Rst => {
                s.step = Step::Done;
                (rng.gen_bool(0.5), Some(RST | ACK), None)
            }
            Ending::Idle => {
                s.step = Step::Done;
                (true, None, None)
            }
        },
        Step::FinIn => {
            s.step = Step::FinOut;
            (false, Some(FIN | ACK), Some(soon))
        }
        Step::FinOut => {
            s.step = Step::Done;
            (true, Some(ACK), None)
        }
        Step::Done => (true, None, None),
    }
}

fn send(
    ends: &mut [RingEnd],
    pool: &PacketPool,
    s: &SimSession,
    from_in: bool,
    flags: u8,
    payload: u16,
) -> bool {
    let sp = &s.spec;
    let (end, lif, src, dst, sport, dport) = if from_in {
        (s.in_end, sp.in_lif, sp.src, sp.dst, sp.sport, sp.dport)
    } else {
        (s.out_end, sp.out_lif, sp.dst, sp.src, sp.dport, sp.sport)
    };
    let control = flags & (FIN | RST) != 0;
    let f = FrameSpec {
        src_mac: [0x02, 0x51, 0x4d, 0, 0, from_in as u8],
        dst_mac: ends[end].mac,
        vlan: (lif >> 16) as u16,
        v6: sp.v6,
        proto: sp.proto,
        src,
        dst,
        sport,
        dport,
        tcp_flags: flags,
        payload_len: if control { 0 } else { payload as usize },
    };
    let mut buf = [0u8; 1600];
    let Some(len) = frame::build(&f, &mut buf) else {
        return false;
    };
    let Some(pkt) = pool.alloc_from(&buf[..len]) else {
        return false;
    };
    ends[end].peer.inject(pkt).is_ok()
}
