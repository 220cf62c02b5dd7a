//! Seats are sticky. A member who holds a seat keeps it until the tenant's
//! seats fall below the number of holders, the member leaves (removed, or
//! the tenant suspended or revoked), or the tenant's admin reassigns it
//! (`PUT .../members/{user}/seat`). A reconcile never moves a seat from one
//! member to another on its own: it only takes seats away when there are
//! more holders than seats, and gives free seats to members in line.
//!
//! One order decides both directions, [`order_key`]: seats pinned by the
//! tenant's admin first, then owners and admins, then the earliest `since`
//! (when a holder got its seat; when a waiting member joined the line),
//! then the user id.
//!
//! - On a cut, holders keep their seats in that order: the last in it lose
//!   theirs first (unpinned before pinned, others before owners and admins,
//!   the most recently seated first).
//! - Free seats go to the line in that order (pinned first, then owners and
//!   admins, then whoever waits longest). A member the admin released is not
//!   in the line until the admin gives it a seat again.
//!
//! A member's `since` changes only when its seat does: given a seat, it is
//! the moment it got it; cut, the moment it joined the line. Members who
//! lose their seats in one cut join the line in the order they held them
//! (the longest-seated first), so they get them back in that order. Losing
//! access with the whole tenant (suspended, revoked) keeps a member's
//! place: when the tenant is seated again, its members come back in the
//! order they stood.

use crate::core::ids::UserId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An instant in the seat order's unit (microseconds since the epoch).
pub fn micros(at: chrono::DateTime<chrono::Utc>) -> u64 {
    u64::try_from(at.timestamp_micros()).unwrap_or(0)
}

/// What the tenant's admin decided about one member's seat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// `true`: given a seat (kept through cuts while an unpinned holder
    /// remains; first in line after the tenant comes back). `false`:
    /// released (out of the line until given a seat again).
    pub hold: bool,
    /// Who decided, as the audit record names them.
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
}

/// A member's place in the seat order, stored with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seat {
    /// Microseconds since the epoch: when the member got its seat (holding)
    /// or joined the line (waiting).
    pub since: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<Pin>,
    /// An owner or admin at the tenant's tier when the member was last
    /// written: its place in the stored seat order ([`order_key_string`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
}

impl Seat {
    pub fn new(since: u64) -> Self {
        Seat { since, pin: None, privileged: false }
    }
    /// Given by the tenant's admin.
    pub fn pinned(&self) -> bool {
        self.pin.as_ref().is_some_and(|p| p.hold)
    }
    /// Released by the tenant's admin: out of the line.
    pub fn released(&self) -> bool {
        self.pin.as_ref().is_some_and(|p| !p.hold)
    }
}

/// One member as the seat decision sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub user_id: &'a UserId,
    /// Holds a seat now.
    pub holds: bool,
    /// Has an owner or admin role (the model's privileged roles).
    pub privileged: bool,
    pub seat: &'a Seat,
}

/// The seat order (smaller first): pinned, then privileged, then the
/// earliest `since`, then the user id.
pub fn order_key<'a>(c: &Candidate<'a>) -> (bool, bool, u64, &'a UserId) {
    (!c.seat.pinned(), !c.privileged, c.seat.since, c.user_id)
}

/// Which stored list of the seat order a member is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatList {
    /// Holding a seat: the last of the list lose theirs first on a cut.
    Holders,
    /// Waiting in line: the first of the list get free seats first.
    Line,
}

impl SeatList {
    pub fn prefix(self) -> &'static str {
        match self {
            SeatList::Holders => "H#",
            SeatList::Line => "W#",
        }
    }
}

/// The seat order as a string that sorts as [`order_key`] does, for the
/// stored index of each list: `<0 pinned|1><0 owner/admin|1><since, 20
/// digits>#<user>`.
pub fn order_key_string(seat: &Seat, user: &UserId) -> String {
    format!("{}{}{:020}#{user}", u8::from(!seat.pinned()), u8::from(!seat.privileged), seat.since)
}

/// Why a member holds or waits for a seat after a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keeps its seat; `place` in the holders' order (the highest loses first on a cut).
    Keeps { place: usize },
    /// Lost its seat: `holders` held one for `total` seats, and it was
    /// at `place` in the holders' order, past the last seat.
    Cut { place: usize, holders: usize, total: u32 },
    /// Given a free seat; `place` in the line it was given from.
    Granted { place: usize },
    /// Waits; `place` in the line (1: next to get a seat).
    Waits { place: usize },
    /// Released by the tenant's admin: waits outside the line.
    Released,
}

impl Verdict {
    pub fn holds(&self) -> bool {
        matches!(self, Verdict::Keeps { .. } | Verdict::Granted { .. })
    }
}

/// Decides the seats of a seated tenant of `total` seats at `now`
/// (microseconds): for each candidate, its verdict and its seat after.
/// Holders keep their seats unless there are more holders than seats;
/// free seats go to the line; nothing else moves.
pub fn decide(total: u32, candidates: &[Candidate<'_>], now: u64) -> BTreeMap<UserId, (Verdict, Seat)> {
    let total_n = total as usize;
    let mut holders: Vec<&Candidate> = candidates.iter().filter(|c| c.holds).collect();
    holders.sort_by_key(|c| order_key(c));
    let kept = holders.len().min(total_n);
    let mut out = BTreeMap::new();
    for (i, c) in holders.iter().enumerate() {
        let decided = if i < kept {
            (Verdict::Keeps { place: i + 1 }, Seat { privileged: c.privileged, ..c.seat.clone() })
        } else {
            // Joins the line now, the longest-seated of the cut first; a pin does not outlive the seat.
            (Verdict::Cut { place: i + 1, holders: holders.len(), total }, Seat { privileged: c.privileged, ..Seat::new(now + (i - kept) as u64) })
        };
        out.insert(c.user_id.clone(), decided);
    }
    let mut line: Vec<&Candidate> = candidates.iter().filter(|c| !c.holds && !c.seat.released()).collect();
    line.sort_by_key(|c| order_key(c));
    let free = total_n - kept;
    for (i, c) in line.iter().enumerate() {
        let decided = if i < free {
            (Verdict::Granted { place: i + 1 }, Seat { since: now + i as u64, pin: c.seat.pin.clone(), privileged: c.privileged })
        } else {
            (Verdict::Waits { place: i + 1 - free }, Seat { privileged: c.privileged, ..c.seat.clone() })
        };
        out.insert(c.user_id.clone(), decided);
    }
    for c in candidates.iter().filter(|c| !c.holds && c.seat.released()) {
        out.insert(c.user_id.clone(), (Verdict::Released, Seat { privileged: c.privileged, ..c.seat.clone() }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn pin(hold: bool) -> Option<Pin> {
        Some(Pin { hold, by: "admin".into(), at: "2026-12-01T00:00:00Z".into() })
    }

    struct Spec {
        id: UserId,
        holds: bool,
        privileged: bool,
        seat: Seat,
    }

    fn spec(name: &str, holds: bool, privileged: bool, since: u64, pin_: Option<Pin>) -> Spec {
        Spec { id: id(name), holds, privileged, seat: Seat { since, pin: pin_, privileged } }
    }

    fn run(total: u32, specs: &[Spec], now: u64) -> BTreeMap<UserId, (Verdict, Seat)> {
        let c: Vec<Candidate> = specs.iter().map(|s| Candidate { user_id: &s.id, holds: s.holds, privileged: s.privileged, seat: &s.seat }).collect();
        decide(total, &c, now)
    }

    fn holders(d: &BTreeMap<UserId, (Verdict, Seat)>) -> Vec<String> {
        d.iter().filter(|(_, (v, _))| v.holds()).map(|(k, _)| k.to_string()).collect()
    }

    #[test]
    fn holders_keep_their_seats_whatever_their_age() {
        // b, the newest, holds; a, older, waits: nothing moves.
        let d = run(1, &[spec("a", false, false, 1, None), spec("b", true, false, 9, None)], 100);
        assert_eq!(holders(&d), vec!["b"]);
        assert_eq!(d[&id("a")].0, Verdict::Waits { place: 1 });
        assert_eq!(d[&id("b")].1, Seat::new(9));
    }

    #[test]
    fn an_admin_in_line_waits_for_a_free_seat_but_goes_first() {
        let specs = [spec("a", true, false, 1, None), spec("m", false, false, 2, None), spec("z", false, true, 5, None)];
        assert_eq!(holders(&run(1, &specs, 100)), vec!["a"]);
        let d = run(2, &specs, 100);
        assert_eq!(holders(&d), vec!["a", "z"]);
        assert_eq!(d[&id("z")], (Verdict::Granted { place: 1 }, Seat { privileged: true, ..Seat::new(100) }));
        assert_eq!(d[&id("m")].0, Verdict::Waits { place: 1 });
    }

    #[test]
    fn a_cut_takes_the_unpinned_unprivileged_most_recently_seated_first() {
        let specs = [
            spec("old", true, false, 1, None),
            spec("new", true, false, 50, None),
            spec("newer", true, false, 60, None),
            spec("admin", true, true, 70, None),
            spec("pinned", true, false, 80, pin(true)),
        ];
        let d = run(3, &specs, 1000);
        assert_eq!(holders(&d), vec!["admin", "old", "pinned"]);
        // The two cut join the line in the order they held their seats.
        assert_eq!(d[&id("new")], (Verdict::Cut { place: 4, holders: 5, total: 3 }, Seat::new(1000)));
        assert_eq!(d[&id("newer")], (Verdict::Cut { place: 5, holders: 5, total: 3 }, Seat::new(1001)));
        // Back to four seats: the longest-seated of them first.
        let after: Vec<Spec> = specs
            .iter()
            .map(|s| {
                let (v, seat) = &d[&s.id];
                Spec { id: s.id.clone(), holds: v.holds(), privileged: s.privileged, seat: seat.clone() }
            })
            .collect();
        assert_eq!(holders(&run(4, &after, 2000)), vec!["admin", "new", "old", "pinned"]);
    }

    #[test]
    fn a_pin_is_lost_with_the_seat_in_a_cut_below_the_pinned() {
        let d = run(1, &[spec("p1", true, false, 1, pin(true)), spec("p2", true, false, 2, pin(true))], 10);
        assert_eq!(holders(&d), vec!["p1"]);
        assert_eq!(d[&id("p2")].1, Seat::new(10));
    }

    #[test]
    fn released_members_are_out_of_the_line() {
        let d = run(3, &[spec("r", false, false, 1, pin(false)), spec("w", false, false, 2, None)], 10);
        assert_eq!(holders(&d), vec!["w"]);
        assert_eq!(d[&id("r")].0, Verdict::Released);
    }

    #[test]
    fn pinned_members_come_back_first_after_the_tenant() {
        // The tenant was suspended: nobody holds; its members kept their places.
        let d = run(1, &[spec("a", false, true, 1, None), spec("p", false, false, 5, pin(true))], 10);
        assert_eq!(holders(&d), vec!["p"]);
        assert!(d[&id("p")].1.pinned());
    }

    fn arb_specs() -> impl Strategy<Value = Vec<(bool, bool, u8, u8)>> {
        prop::collection::vec((any::<bool>(), any::<bool>(), 0u8..40, 0u8..6), 0..30)
    }

    fn build(raw: &[(bool, bool, u8, u8)]) -> Vec<Spec> {
        raw.iter()
            .enumerate()
            .map(|(i, (holds, privileged, since, p))| {
                let pin_ = match p {
                    0 => pin(true),
                    1 => pin(false),
                    _ => None,
                };
                // A released member never holds (the route releases the seat with the pin).
                let holds = *holds && *p != 1;
                spec(&format!("u{i}"), holds, *privileged, u64::from(*since), pin_)
            })
            .collect()
    }

    proptest! {
        #[test]
        fn seats_never_move_and_never_overbook(raw in arb_specs(), total in 0u32..20) {
            let specs = build(&raw);
            let d = run(total, &specs, 1_000);
            let held_before = specs.iter().filter(|s| s.holds).count();
            let after = d.values().filter(|(v, _)| v.holds()).count();
            prop_assert!(after <= total as usize);
            let lost = specs.iter().filter(|s| s.holds && !d[&s.id].0.holds()).count();
            let gained = specs.iter().filter(|s| !s.holds && d[&s.id].0.holds()).count();
            // Never both: a seat is taken only when there are more holders than seats.
            prop_assert!(lost == 0 || gained == 0);
            prop_assert_eq!(lost, held_before.saturating_sub(total as usize));
            // Every seat is used while someone is in line.
            let in_line = specs.iter().filter(|s| !d[&s.id].0.holds() && !s.seat.released()).count();
            prop_assert!(in_line == 0 || after == total as usize);
            // The released are never given a seat.
            prop_assert!(specs.iter().all(|s| !(s.seat.released() && d[&s.id].0.holds())));
        }

        #[test]
        fn the_order_decides_who_keeps_and_who_gets(raw in arb_specs(), total in 0u32..20) {
            let specs = build(&raw);
            let d = run(total, &specs, 1_000);
            let key = |s: &Spec| (!s.seat.pinned(), !s.privileged, s.seat.since, s.id.clone());
            for a in &specs {
                for b in &specs {
                    // Among holders: if b keeps and a is before b, a keeps.
                    if a.holds && b.holds && key(a) < key(b) && d[&b.id].0.holds() {
                        prop_assert!(d[&a.id].0.holds());
                    }
                    // In line: if b is given a seat and a is before b, a is too.
                    let in_line = |s: &Spec| !s.holds && !s.seat.released();
                    if in_line(a) && in_line(b) && key(a) < key(b) && d[&b.id].0.holds() {
                        prop_assert!(d[&a.id].0.holds());
                    }
                }
            }
        }

        #[test]
        fn deciding_again_changes_nothing(raw in arb_specs(), total in 0u32..20) {
            let specs = build(&raw);
            let d = run(total, &specs, 1_000);
            let after: Vec<Spec> = specs.iter().map(|s| {
                let (v, seat) = &d[&s.id];
                Spec { id: s.id.clone(), holds: v.holds(), privileged: s.privileged, seat: seat.clone() }
            }).collect();
            let again = run(total, &after, 2_000);
            for s in &after {
                prop_assert_eq!(again[&s.id].0.holds(), s.holds);
                prop_assert_eq!(&again[&s.id].1, &s.seat);
            }
        }
    }
}
