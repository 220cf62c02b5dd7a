//! Desired access for a 10,000-member tenant: the pure core provision runs on
//! every reconcile (effective license, role rules, seat ranking, the plan).
//! Run with `make bench`; docs/benchmarks.md has the figures.

use criterion::{criterion_group, criterion_main, Criterion};
use entitle::core::access::{desired_access, plan, Member, MemberAccess, MemberItem, MemberStatus};
use entitle::core::ids::{EventId, LicenseId, TenantId, UserId};
use entitle::core::license::{License, LicenseStatus, Source};
use entitle::core::model::LicensingModel;
use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;

const MEMBERS: usize = 10_000;

fn tenant(seats: u32) -> (Vec<License>, Vec<MemberItem>) {
    let licenses = vec![
        License {
            license_id: LicenseId::parse("sub_big").unwrap(),
            source: Source::Stripe,
            tier: "business".into(),
            seats,
            addons: ["sso".to_string()].into(),
            status: LicenseStatus::Active,
            starts_at: None,
            expires_at: None,
            source_version: 1,
            last_event_id: EventId::parse("evt_1").unwrap(),
            timeline: Default::default(),
        },
        License {
            license_id: LicenseId::parse("crm_big").unwrap(),
            source: Source::Crm,
            tier: "team".into(),
            seats: 500,
            addons: BTreeSet::new(),
            status: LicenseStatus::Active,
            starts_at: None,
            expires_at: None,
            source_version: 1,
            last_event_id: EventId::parse("crm_1").unwrap(),
            timeline: Default::default(),
        },
    ];
    let members = (0..MEMBERS)
        .map(|i| {
            let groups: BTreeSet<String> = match i % 50 {
                0 => ["admins".to_string()].into(),
                1 => ["finance".to_string()].into(),
                2 => ["owners".to_string()].into(),
                _ => ["engineering".to_string()].into(),
            };
            let mut attributes = BTreeMap::new();
            if i % 7 == 0 {
                attributes.insert("employment".to_string(), "contractor".to_string());
            }
            let member =
                Member { user_id: UserId::parse(format!("user{i:05}")).unwrap(), email: format!("user{i}@example.com"), groups, attributes, seq: i as u64 + 1, removed: i % 97 == 0, suspended: false };
            MemberItem::new(member, MemberAccess::without_access(MemberStatus::PendingSeat), &LicensingModel::default_model())
        })
        .collect();
    (licenses, members)
}

fn bench(c: &mut Criterion) {
    let model = LicensingModel::default_model();
    let t = TenantId::parse("bench").unwrap();
    let (licenses, members) = tenant(9_000);
    c.bench_function("desired_access/10k_members", |b| b.iter(|| desired_access(black_box(&model), black_box(&licenses), black_box(&members), 1_000)));

    // A seat cut from 9,500 to 7,500 against the current state: desired access and the plan.
    let current = desired_access(&model, &licenses, &members, 1_000);
    let actual: Vec<MemberItem> = members
        .iter()
        .map(|m| {
            let d = &current.members[&m.member.user_id];
            MemberItem { access: d.access.clone(), seat: d.seat.clone(), ..m.clone() }
        })
        .collect();
    let (cut, _) = tenant(7_000);
    c.bench_function("desired_access_and_plan/10k_members_seat_cut", |b| {
        b.iter(|| {
            let d = desired_access(black_box(&model), black_box(&cut), black_box(&actual), 2_000);
            let p = plan(&t, d, Some(&current.tenant), black_box(&actual));
            assert!(p.member_changes.iter().all(|c| c.after.status != MemberStatus::Active || c.before.status == MemberStatus::Active));
            p
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
