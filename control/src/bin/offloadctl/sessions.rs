//! The session calls one at a time: add, get, delete, list, closed.

use std::net::IpAddr;

use control::client::SessionClient;
use control::wire::{add_status_name, close_code_name, request_from_spec, request_status_name};
use dataplane::session::SessionSpec;
use proto::admin::ClosedAck;
use proto::v2::{
    AddSessionResponse, AddSessionStatus, RequestStatus, SessionRequestArgs, SessionResponse,
};
use tokio_stream::StreamExt;
use tonic::{Code, Status};

use crate::output::{session_json, session_row, session_text, short, Table, SESSION_HEADER};
use crate::{parse_ip, status_line, ActionArg, Conn, Proto};

#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// Session id (chosen by the firewall; the key of every later call).
    #[arg(long)]
    pub id: u64,
    /// Source address (IPv4 or IPv6; the destination must be of the same version).
    #[arg(long, value_parser = parse_ip)]
    pub src: IpAddr,
    #[arg(long)]
    pub sport: u16,
    /// Destination address.
    #[arg(long, value_parser = parse_ip)]
    pub dst: IpAddr,
    #[arg(long)]
    pub dport: u16,
    #[arg(long, value_enum, default_value = "tcp")]
    pub proto: Proto,
    /// Logical interface the source side is on.
    #[arg(long, default_value_t = 1)]
    pub in_lif: u32,
    /// Logical interface the destination side is on.
    #[arg(long, default_value_t = 2)]
    pub out_lif: u32,
    #[arg(long, value_enum, default_value = "forward")]
    pub action: ActionArg,
    /// Next-hop router for forwarded packets (default: the out lif's).
    #[arg(long, value_parser = parse_ip)]
    pub next_hop: Option<IpAddr>,
    /// Idle timeout in seconds (0: the device's default).
    #[arg(long, default_value_t = 0)]
    pub timeout: u32,
}

impl AddArgs {
    pub fn spec(&self) -> Result<SessionSpec, String> {
        if self.src.is_ipv4() != self.dst.is_ipv4() {
            return Err("--src and --dst must both be IPv4 or both IPv6".into());
        }
        let proto = match self.proto {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        };
        let mut s = SessionSpec::new(
            self.id,
            self.in_lif,
            self.out_lif,
            proto,
            self.src,
            self.sport,
            self.dst,
            self.dport,
            self.action.action(),
        );
        s.next_hop = self.next_hop;
        s.timeout_s = self.timeout;
        Ok(s)
    }
}

/// The answer for the `index`-th session (id `id`) of an AddSession call: its own
/// entry in `response_error`, else its bit in `error_status` (with the call's
/// reason), else accepted.
pub fn add_outcome(r: &AddSessionResponse, index: usize, id: u64) -> i32 {
    if let Some(e) = r.response_error.iter().find(|e| e.session_id == id) {
        return e.error_status;
    }
    let flagged = index < 64 && r.error_status & (1 << index) != 0;
    // A device that reports only the call's status: no per-session detail at all.
    let only_call = r.response_error.is_empty() && r.error_status == 0;
    if flagged || only_call {
        r.request_status
    } else {
        AddSessionStatus::SessionAccepted as i32
    }
}

pub async fn add(conn: &Conn, a: AddArgs) -> Result<(), String> {
    let spec = a.spec()?;
    let mut c = conn.sessions().await?;
    let answer = c
        .add_call(vec![request_from_spec(&spec)])
        .await
        .map_err(|s| status_line("AddSession failed", &s))?;
    let (told, _) = control::refusal::told(answer.metadata());
    let r = answer.into_inner();
    let status = add_outcome(&r, 0, a.id);
    let accepted = status == AddSessionStatus::SessionAccepted as i32;
    // The device's words for the refusal, when it says them (offloadd does, in the
    // trailers); else only the status name.
    let why = told.iter().find(|t| t.session_id == a.id);
    if conn.json {
        let j = serde_json::json!({
            "session_id": a.id,
            "accepted": accepted,
            "status": add_status_name(status),
            "reason": why.map(|t| t.reason.as_str()),
            "detail": why.map(|t| t.text.as_str()),
        });
        out!("{j}");
    } else if accepted {
        out!("session {}: accepted", a.id);
    }
    match (accepted, why) {
        (true, _) => Ok(()),
        (false, Some(t)) => Err(format!(
            "session {} rejected: {} ({})",
            a.id,
            t.text,
            add_status_name(status)
        )),
        (false, None) => Err(format!(
            "session {} rejected: {}",
            a.id,
            add_status_name(status)
        )),
    }
}

/// The session from a Get or Delete answer, or why there is none.
pub fn found(id: u64, r: Result<SessionResponse, Status>) -> Result<SessionResponse, String> {
    match r {
        Ok(r) if r.request_status == RequestStatus::Accepted as i32 => Ok(r),
        Ok(r) if r.request_status == RequestStatus::RejectedSessionNonexistent as i32 => {
            Err(format!("session {id} does not exist"))
        }
        Ok(r) => Err(format!(
            "session {id}: {}",
            request_status_name(r.request_status)
        )),
        Err(s) if s.code() == Code::NotFound => Err(format!("session {id} does not exist")),
        Err(s) => Err(status_line(&format!("session {id}"), &s)),
    }
}

fn print_session(conn: &Conn, r: &SessionResponse) {
    if conn.json {
        out!("{}", session_json(r));
    } else {
        out!("{}", session_text(r));
    }
}

pub async fn get(conn: &Conn, id: u64) -> Result<(), String> {
    let mut c = conn.sessions().await?;
    let r = found(id, c.get(id).await)?;
    print_session(conn, &r);
    Ok(())
}

pub async fn delete(conn: &Conn, id: u64) -> Result<(), String> {
    let mut c = conn.sessions().await?;
    let r = found(id, c.delete(id).await)?;
    print_session(conn, &r);
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Sessions per GetAllSessions call.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub page_size: u32,
    /// Show only this page (page-number style, 1-based).
    #[arg(long, conflicts_with_all = ["cursor", "all"], value_parser = clap::value_parser!(u32).range(1..))]
    pub page: Option<u32>,
    /// Show the page of sessions with ids above this one (cursor style; 4294967295:
    /// from the beginning, and a session with that id is never on a cursor page).
    #[arg(long)]
    pub cursor: Option<u64>,
    /// With --cursor: go on to the end of the table.
    #[arg(long, requires = "cursor")]
    pub all: bool,
}

/// The cursor that means "from the beginning"; cursor pages never list a session
/// with this id (see docs/api.md), so `walk` asks for it by id.
pub const CURSOR_FROM_START: u64 = 4_294_967_295;

/// Walks GetAllSessions cursor style over the ids above `after` (None: all), up to
/// `limit` sessions, then adds the session whose id is the start marker, if it is in
/// range. Ids must rise; a page that brings nothing new ends the walk (a device that
/// ignored the cursor would otherwise be read forever).
pub async fn walk(
    c: &mut SessionClient,
    page_size: u32,
    after: Option<u64>,
    limit: Option<usize>,
) -> Result<Vec<SessionResponse>, Status> {
    let mut out: Vec<SessionResponse> = Vec::new();
    let mut cursor = after.unwrap_or(CURSOR_FROM_START);
    let mut last = after;
    loop {
        let page = c
            .list(SessionRequestArgs {
                page_size,
                page: 0,
                start_session: cursor,
            })
            .await?;
        let before = out.len();
        for s in page.session_info {
            if last.is_none_or(|l| s.session_id > l) {
                last = Some(s.session_id);
                out.push(s);
            }
        }
        if out.len() == before || limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        cursor = last.unwrap_or(cursor);
    }
    if after.is_none_or(|a| a < CURSOR_FROM_START) {
        if let Some(marker) = session_if_held(c, CURSOR_FROM_START).await? {
            let at = out.partition_point(|s| s.session_id < CURSOR_FROM_START);
            out.insert(at, marker);
        }
    }
    if let Some(l) = limit {
        out.truncate(l);
    }
    Ok(out)
}

/// GetSession, with both kinds of "no such session" read as None.
async fn session_if_held(
    c: &mut SessionClient,
    id: u64,
) -> Result<Option<SessionResponse>, Status> {
    match c.get(id).await {
        Ok(r) if r.request_status == RequestStatus::Accepted as i32 => Ok(Some(r)),
        Ok(_) => Ok(None),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(s),
    }
}

fn print_sessions(conn: &Conn, list: &[SessionResponse]) {
    if conn.json {
        for s in list {
            out!("{}", session_json(s));
        }
        return;
    }
    let mut t = Table::new(SESSION_HEADER);
    for s in list {
        t.row(session_row(s));
    }
    if !t.is_empty() {
        out!("{}", t.render());
    }
    out!("{} sessions", list.len());
}

pub async fn list(conn: &Conn, a: ListArgs) -> Result<(), String> {
    let mut c = conn.sessions().await?;
    let err = |s: Status| status_line("GetAllSessions failed", &s);
    if let Some(page) = a.page {
        let args = SessionRequestArgs {
            page_size: a.page_size,
            page,
            start_session: 0,
        };
        let r = c.list(args).await.map_err(err)?;
        print_sessions(conn, &r.session_info);
        return Ok(());
    }
    match a.cursor {
        Some(cursor) if !a.all => {
            let args = SessionRequestArgs {
                page_size: a.page_size,
                page: 0,
                start_session: cursor,
            };
            let r = c.list(args).await.map_err(err)?;
            print_sessions(conn, &r.session_info);
            if !conn.json && !r.session_info.is_empty() {
                out!("next page: --cursor {}", r.next_key);
            }
        }
        cursor => {
            let after = cursor.filter(|&c| c != CURSOR_FROM_START);
            let all = walk(&mut c, a.page_size, after, None).await.map_err(err)?;
            print_sessions(conn, &all);
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct ClosedArgs {
    /// Keep printing closures as they happen (until Ctrl-C), over the admin
    /// AckedClosedSessions call: each record is acked once printed, so a record printed
    /// is never printed again and one received but not printed comes back.
    #[arg(long)]
    pub follow: bool,
    /// At most this many records (0: all the device has).
    #[arg(long, default_value_t = 0)]
    pub page_size: u32,
}

/// One closed record on one line.
pub fn closed_line(r: &SessionResponse) -> String {
    format!(
        "session {} closed {}: in {} pkts {} bytes, out {} pkts {} bytes",
        r.session_id,
        short(close_code_name(r.session_close_code)),
        r.in_packets,
        r.in_bytes,
        r.out_packets,
        r.out_bytes
    )
}

pub async fn closed(conn: &Conn, a: ClosedArgs) -> Result<(), String> {
    if a.follow {
        return closed_acked(conn, a).await;
    }
    let mut c = conn.sessions().await?;
    let args = SessionRequestArgs {
        page_size: a.page_size,
        ..Default::default()
    };
    let err = |s: Status| status_line("GetClosedSessions failed", &s);
    let mut stream = c.closed(args, false).await.map_err(err)?;
    let mut n = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            _ = &mut ctrl_c => break,
        };
        let Some(item) = item else { break };
        let r = item.map_err(err)?;
        n += 1;
        if conn.json {
            out!("{}", session_json(&r));
        } else {
            out!("{}", closed_line(&r));
        }
    }
    if !conn.json {
        out!("{n} closed sessions");
    }
    Ok(())
}

/// How long `closed --follow` waits, once it stops, for the device to end the call
/// (which it does after applying every ack sent before).
const ACKS_SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// `closed --follow`: the admin AckedClosedSessions call. Each record is acked once it
/// is printed (stdout flushed), so a record is printed once even when offloadctl is
/// killed: one received and not acked goes back to the device's feed.
/// A stream error that means the device (or the connection to it) went away, not
/// that it refused something.
fn device_went_away(s: &Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::Internal
    ) && [
        "h2 protocol error",
        "connection",
        "transport",
        "broken pipe",
        "stopping",
    ]
    .iter()
    .any(|m| s.message().contains(m))
}

async fn closed_acked(conn: &Conn, a: ClosedArgs) -> Result<(), String> {
    let mut admin = control::client::admin(conn.channel().await?);
    let (acks, ack_stream) = futures::channel::mpsc::unbounded::<ClosedAck>();
    let err = |s: Status| status_line("AckedClosedSessions failed", &s);
    let mut stream = admin
        .acked_closed_sessions(ack_stream)
        .await
        .map_err(err)?
        .into_inner();
    let limit = match a.page_size {
        0 => u64::MAX,
        n => n as u64,
    };
    let mut n = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while n < limit {
        let item = tokio::select! {
            item = stream.next() => item,
            _ = &mut ctrl_c => break,
        };
        let ended = |how: String| {
            format!("{how} after {n} closed sessions; records not printed stay on the device (or are lost with it)")
        };
        let Some(item) = item else {
            return Err(ended(
                "the device ended the follow stream (it is stopping)".into(),
            ));
        };
        let r = match item {
            Ok(r) => r.session.unwrap_or_default(),
            Err(s) if device_went_away(&s) => {
                return Err(ended(format!("the follow stream ended ({})", s.message())))
            }
            Err(s) => return Err(err(s)),
        };
        if conn.json {
            out!("{}", session_json(&r));
        } else {
            out!("{}", closed_line(&r));
        }
        n += 1;
        // `out!` flushed stdout: the record is out of our hands, ack it.
        let _ = acks.unbounded_send(ClosedAck {
            session_ids: vec![r.session_id],
        });
    }
    // Closing the ack stream ends the call once the device has applied every ack
    // before it; records that arrive meanwhile are not printed (not acked: they go
    // back to the device).
    drop(acks);
    let settle = async {
        while let Some(item) = stream.next().await {
            item.map_err(err)?;
        }
        Ok::<(), String>(())
    };
    tokio::time::timeout(ACKS_SETTLE, settle)
        .await
        .map_err(|_| "AckedClosedSessions: the device did not end the call".to_string())??;
    if !conn.json {
        out!("{n} closed sessions");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::v2::SessionResponseError;

    #[test]
    fn add_outcome_reads_each_sessions_answer() {
        let mut r = AddSessionResponse {
            request_status: AddSessionStatus::SessionRejected as i32,
            error_status: 0b101,
            response_error: vec![SessionResponseError {
                session_id: 5,
                error_status: AddSessionStatus::SessionTableFull as i32,
            }],
            ..Default::default()
        };
        assert_eq!(
            add_outcome(&r, 0, 5),
            AddSessionStatus::SessionTableFull as i32
        );
        assert_eq!(add_outcome(&r, 1, 6), 0, "not listed: accepted");
        assert_eq!(
            add_outcome(&r, 2, 7),
            AddSessionStatus::SessionRejected as i32
        );
        r.response_error.clear();
        r.error_status = 0;
        r.request_status = AddSessionStatus::SessionTableFull as i32;
        assert_eq!(
            add_outcome(&r, 70, 6),
            AddSessionStatus::SessionTableFull as i32
        );
        r.request_status = 0;
        assert_eq!(add_outcome(&r, 0, 6), 0);
    }

    #[test]
    fn found_reads_both_kinds_of_missing() {
        let missing = SessionResponse {
            session_id: 3,
            request_status: RequestStatus::RejectedSessionNonexistent as i32,
            ..Default::default()
        };
        assert_eq!(
            found(3, Ok(missing)).unwrap_err(),
            "session 3 does not exist"
        );
        let e = found(3, Err(Status::not_found("no such session"))).unwrap_err();
        assert_eq!(e, "session 3 does not exist");
        let e = found(3, Err(Status::unavailable("down"))).unwrap_err();
        assert!(e.contains("Unavailable"), "{e}");
        assert!(found(3, Ok(SessionResponse::default())).is_ok());
    }

    #[test]
    fn add_args_make_a_spec() {
        use clap::Parser;
        let c = crate::Cli::try_parse_from([
            "offloadctl",
            "add",
            "--id",
            "4",
            "--src",
            "2001:db8::1",
            "--sport",
            "1000",
            "--dst",
            "2001:db8::2",
            "--dport",
            "53",
            "--proto",
            "udp",
            "--action",
            "snoop",
            "--timeout",
            "9",
        ])
        .unwrap();
        let crate::Cmd::Add(a) = c.cmd else { panic!() };
        let s = a.spec().unwrap();
        assert!(s.v6);
        assert_eq!(
            (s.id, s.proto, s.in_lif, s.out_lif, s.timeout_s),
            (4, 17, 1, 2, 9)
        );
        let c = crate::Cli::try_parse_from([
            "offloadctl",
            "add",
            "--id",
            "4",
            "--src",
            "10.0.0.1",
            "--sport",
            "1000",
            "--dst",
            "2001:db8::2",
            "--dport",
            "53",
        ])
        .unwrap();
        let crate::Cmd::Add(a) = c.cmd else { panic!() };
        assert!(a.spec().is_err());
    }
}
