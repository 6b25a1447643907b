//! What `-vv` prints for each message, sent or received.

use super::*;

/// Appends `m` to the outgoing buffer `out`, logging it for `-vv`. A free
/// function so callers can pass payloads borrowed from other fields.
pub(super) fn queue(out: &mut Vec<u8>, addr: SocketAddr, m: Message<'_>) {
    trace!("{addr} -> {}", readable(&m));
    m.encode_into(out);
}

/// A message in one readable line for `-vv` logs (payloads summarised).
pub(super) fn readable(m: &Message<'_>) -> String {
    match m {
        Message::KeepAlive => "keep-alive".into(),
        Message::Choke => "choke".into(),
        Message::Unchoke => "unchoke".into(),
        Message::Interested => "interested".into(),
        Message::NotInterested => "not-interested".into(),
        Message::Have(i) => format!("have piece={i}"),
        Message::Bitfield(b) => {
            let ones: u32 = b.iter().map(|x| x.count_ones()).sum();
            format!("bitfield bytes={} pieces={ones}", b.len())
        }
        Message::Request {
            index,
            begin,
            length,
        } => format!("request piece={index} offset={begin} length={length}"),
        Message::Piece { index, begin, data } => {
            format!("piece piece={index} offset={begin} length={}", data.len())
        }
        Message::Cancel {
            index,
            begin,
            length,
        } => format!("cancel piece={index} offset={begin} length={length}"),
        Message::Port(p) => format!("port {p}"),
        Message::Extended(id, p) => format!("extended id={id} length={}", p.len()),
        Message::SuggestPiece(i) => format!("suggest piece={i}"),
        Message::HaveAll => "have-all".into(),
        Message::HaveNone => "have-none".into(),
        Message::RejectRequest {
            index,
            begin,
            length,
        } => format!("reject piece={index} offset={begin} length={length}"),
        Message::AllowedFast(i) => format!("allowed-fast piece={i}"),
        Message::Unknown(id) => format!("unknown id={id}"),
    }
}
