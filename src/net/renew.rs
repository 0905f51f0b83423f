//! Keeping the DHCP lease while the client runs (RFC 2131 section 4.4.5): at
//! T1 a unicast REQUEST to the server that granted it (RENEWING), at T2 a
//! broadcast one to any server (REBINDING), at expiry a fresh DISCOVER. An
//! unanswered attempt is repeated after half the time left in its phase, at
//! least a minute apart. A pull can take hours, leases can be short.
//!
//! A broken or hostile server cannot make the client spin: the times it gives
//! are floored ([`MIN_LEASE_TIME`]), and the notices are rate-limited
//! ([`NoticeBudget`]).
//!
//! The timing is a pure function of the elapsed time ([`next_action`]); the
//! loop ([`Renewer`]) runs against a [`Clock`] and a [`Server`], so tests use
//! a fake clock instead of waiting for a lease to age.

use super::dhcp::{self, Lease};
use super::{Link, ioctl};
use std::time::{Duration, Instant};

/// Attempts in one phase are at least this far apart (RFC 2131: 60 s).
pub const MIN_RETRY: Duration = Duration::from_secs(60);

/// The least T1, T2 and lease time taken from a server: a T1 of 0 would
/// otherwise make a tight REQUEST/ACK loop.
pub const MIN_LEASE_TIME: Duration = Duration::from_secs(60);

/// When the lease must be renewed, rebound, and when it is gone; measured
/// from the moment it was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    pub t1: Duration,
    pub t2: Duration,
    pub expiry: Duration,
}

impl Times {
    /// T1 and T2 from the lease (options 58, 59), else 1/2 and 7/8 of its
    /// time, each at least [`MIN_LEASE_TIME`]. `None` for an infinite lease
    /// (0xffffffff) or one without a time.
    pub fn of(lease: &Lease) -> Option<Times> {
        let expiry = lease.lease_time?.max(MIN_LEASE_TIME);
        if expiry.as_secs() >= u64::from(u32::MAX) {
            return None;
        }
        let t2 = lease
            .rebinding
            .filter(|t| *t <= expiry)
            .unwrap_or(expiry * 7 / 8)
            .max(MIN_LEASE_TIME);
        let t1 = lease
            .renewal
            .filter(|t| *t <= t2)
            .unwrap_or(expiry / 2)
            .max(MIN_LEASE_TIME);
        Some(Times {
            t1: t1.min(t2),
            t2,
            expiry,
        })
    }
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Sleep(Duration),
    /// RENEWING: unicast to the granting server.
    Renew,
    /// REBINDING: broadcast to any server.
    Rebind,
    /// The lease is over: start again with DISCOVER.
    Expired,
}

/// The next step, `elapsed` after the lease was granted, given the elapsed
/// time of the last unanswered attempt (if any).
pub fn next_action(times: &Times, elapsed: Duration, last_try: Option<Duration>) -> Action {
    if elapsed >= times.expiry {
        return Action::Expired;
    }
    let (action, start, deadline) = if elapsed >= times.t2 {
        (Action::Rebind, times.t2, times.expiry)
    } else if elapsed >= times.t1 {
        (Action::Renew, times.t1, times.t2)
    } else {
        return Action::Sleep(times.t1 - elapsed);
    };
    match last_try.filter(|t| *t >= start) {
        None => action,
        Some(last) => {
            let wait = (deadline.saturating_sub(last) / 2).max(MIN_RETRY);
            let due = (last + wait).min(deadline);
            if elapsed >= due {
                action
            } else {
                Action::Sleep(due - elapsed)
            }
        }
    }
}

/// Time as the renewer sees it.
pub trait Clock {
    /// Monotonic time since some fixed start.
    fn now(&self) -> Duration;
    fn sleep(&self, d: Duration);
}

/// The DHCP exchanges and the interface, as the renewer uses them.
pub trait Server {
    /// A REQUEST for `lease` (`rebind`: broadcast); `Err` with a reason on no
    /// answer, `Ok(None)` on a NAK.
    fn renew(&mut self, lease: &Lease, rebind: bool) -> Result<Option<Lease>, String>;
    /// A new lease from scratch (DISCOVER).
    fn discover(&mut self) -> Result<Lease, String>;
    /// Configures the interface for `new` (called when the address or the
    /// gateway changed).
    fn apply(&mut self, new: &Lease) -> Result<(), String>;
}

/// The renewal loop for one interface.
pub struct Renewer<C: Clock, S: Server> {
    pub clock: C,
    pub server: S,
    pub interface: String,
    pub lease: Lease,
    granted: Duration,
    last_try: Option<Duration>,
    /// The test knob `failback.dhcp_renew=`: replaces the first T1, below
    /// the floor if asked; gone once the lease is granted again.
    first_renewal: Option<Duration>,
    notices: NoticeBudget,
}

impl<C: Clock, S: Server> Renewer<C, S> {
    /// Starts with `lease`, granted just now.
    pub fn new(clock: C, server: S, interface: String, lease: Lease) -> Self {
        let granted = clock.now();
        Renewer {
            clock,
            server,
            interface,
            lease,
            granted,
            last_try: None,
            first_renewal: None,
            notices: NoticeBudget::new(granted),
        }
    }

    /// Makes the first renewal `after` the grant instead of at T1.
    pub fn with_first_renewal(mut self, after: Option<Duration>) -> Self {
        self.first_renewal = after;
        self
    }

    fn times(&self) -> Option<Times> {
        let mut times = Times::of(&self.lease)?;
        if let Some(first) = self.first_renewal {
            times.t1 = first.min(times.t2);
        }
        Some(times)
    }

    /// One step: sleeps, or makes one attempt. Returns what the operator
    /// should be told (empty: nothing, or too much said lately); `None` for
    /// a lease without an end: nothing left to do, the caller stops.
    pub fn step(&mut self) -> Option<String> {
        let text = self.attempt()?;
        if text.is_empty() {
            return Some(text);
        }
        Some(
            self.notices
                .pass(self.clock.now(), text)
                .unwrap_or_default(),
        )
    }

    fn attempt(&mut self) -> Option<String> {
        let times = self.times()?;
        let elapsed = self.clock.now().saturating_sub(self.granted);
        let rebind = match next_action(&times, elapsed, self.last_try) {
            Action::Sleep(d) => {
                self.clock.sleep(d);
                return Some(String::new());
            }
            Action::Renew => false,
            Action::Rebind => true,
            Action::Expired => return Some(self.rediscover("the lease expired")),
        };
        let how = if rebind {
            "rebinding (broadcast)"
        } else {
            "renewing with"
        };
        match self.server.renew(&self.lease, rebind) {
            Ok(Some(new)) => Some(self.granted(new, how)),
            Ok(None) => Some(self.rediscover("the server refused the renewal (NAK)")),
            Err(why) => {
                self.last_try = Some(elapsed);
                Some(format!(
                    "DHCP on {}: {} {} got no answer ({why}); {} s of the lease left",
                    self.interface,
                    how,
                    self.lease.server,
                    times.expiry.saturating_sub(elapsed).as_secs()
                ))
            }
        }
    }

    fn granted(&mut self, new: Lease, how: &str) -> String {
        let old = std::mem::replace(&mut self.lease, new);
        self.granted = self.clock.now();
        self.last_try = None;
        self.first_renewal = None;
        let new = &self.lease;
        let seconds = new.lease_time.map_or(0, |t| t.as_secs());
        let changed = old.address != new.address
            || old.prefix != new.prefix
            || old.gateway != new.gateway
            || old.dns != new.dns;
        if !changed {
            return format!(
                "DHCP on {}: lease of {} renewed ({how} {}) for {seconds} s",
                self.interface, new.address, new.server
            );
        }
        let applied = match self.server.apply(new) {
            Ok(()) => String::new(),
            Err(e) => format!("; but {e}"),
        };
        format!(
            "DHCP on {}: address {}/{} changed to {}/{} (gateway {}) for {seconds} s{applied}",
            self.interface,
            old.address,
            old.prefix,
            new.address,
            new.prefix,
            new.gateway.map_or("none".to_string(), |g| g.to_string())
        )
    }

    fn rediscover(&mut self, why: &str) -> String {
        match self.server.discover() {
            Ok(new) => {
                let text = self.granted(new, "new lease after DISCOVER from");
                format!("{why}; {text}")
            }
            Err(e) => {
                // Keep using the old address (nothing better); try again soon.
                self.clock.sleep(MIN_RETRY / 2);
                format!(
                    "DHCP on {}: {why}, and no new lease: {e}; keeping {}",
                    self.interface, self.lease.address
                )
            }
        }
    }
}

/// How many notices the renewal may print: a burst of [`NoticeBudget::BURST`],
/// then one per [`NoticeBudget::REFILL`]; what it holds back is counted in the
/// next one shown. Normal leases print one notice per renewal, hours apart.
#[derive(Debug)]
pub struct NoticeBudget {
    left: u32,
    refilled_at: Duration,
    held_back: u32,
}

impl NoticeBudget {
    pub const BURST: u32 = 5;
    pub const REFILL: Duration = Duration::from_secs(600);

    pub fn new(now: Duration) -> Self {
        NoticeBudget {
            left: Self::BURST,
            refilled_at: now,
            held_back: 0,
        }
    }

    /// `text` if it may be shown at `now` (with the count of those held
    /// back before it), else `None`.
    pub fn pass(&mut self, now: Duration, text: String) -> Option<String> {
        let earned = now.saturating_sub(self.refilled_at).as_secs() / Self::REFILL.as_secs();
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            self.left = self.left.saturating_add(earned).min(Self::BURST);
            self.refilled_at = if self.left == Self::BURST {
                now
            } else {
                self.refilled_at + Self::REFILL * earned
            };
        }
        if self.left == 0 {
            self.held_back = self.held_back.saturating_add(1);
            return None;
        }
        self.left -= 1;
        Some(match std::mem::take(&mut self.held_back) {
            0 => text,
            n => format!("{text} ({n} earlier DHCP notices not shown)"),
        })
    }
}

/// The real clock: monotonic, unaffected by the clock being set.
pub struct SystemClock(Instant);

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// DHCP on a configured interface.
pub struct LinkServer {
    pub link: Link,
    pub timeout: Duration,
}

impl Server for LinkServer {
    fn renew(&mut self, lease: &Lease, rebind: bool) -> Result<Option<Lease>, String> {
        match dhcp::renew(
            &self.link.name,
            self.link.mac.0,
            lease,
            rebind,
            self.timeout,
        ) {
            Ok(l) => Ok(Some(l)),
            Err(dhcp::Error::Nak { .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
    fn discover(&mut self) -> Result<Lease, String> {
        dhcp::acquire(&self.link.name, self.link.mac.0, self.timeout).map_err(|e| e.to_string())
    }
    fn apply(&mut self, new: &Lease) -> Result<(), String> {
        let name = &self.link.name;
        ioctl::set_address(name, new.address, new.prefix)
            .map_err(|e| format!("cannot set {}/{} on {name}: {e}", new.address, new.prefix))?;
        if let Some(gw) = new.gateway {
            ioctl::add_default_route(name, gw)
                .map_err(|e| format!("cannot route via {gw} on {name}: {e}"))?;
        }
        if !new.dns.is_empty() {
            std::fs::write("/etc/resolv.conf", super::resolv_conf(&new.dns))
                .map_err(|e| format!("cannot write /etc/resolv.conf: {e}"))?;
        }
        Ok(())
    }
}

/// Runs the renewal of `lease` on `link` in a background thread for the rest
/// of the process; `notice` receives what the operator should be told.
/// `first_renewal`: see [`Renewer::with_first_renewal`].
pub fn spawn(
    link: Link,
    lease: Lease,
    first_renewal: Option<Duration>,
    notice: impl Fn(String) + Send + 'static,
) {
    if Times::of(&lease).is_none() {
        return;
    }
    let interface = link.name.clone();
    let server = LinkServer {
        link,
        timeout: Duration::from_secs(10),
    };
    let spawned = std::thread::Builder::new()
        .name("dhcp-renew".into())
        .spawn(move || {
            let mut renewer = Renewer::new(SystemClock(Instant::now()), server, interface, lease)
                .with_first_renewal(first_renewal);
            while let Some(text) = renewer.step() {
                if !text.is_empty() {
                    notice(text);
                }
            }
        });
    if let Err(e) = spawned {
        // Without the thread the lease still lasts its time; say so and go on.
        eprintln!("failback: cannot start DHCP renewal: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::net::Ipv4Addr;
    use std::rc::Rc;

    fn lease(address: [u8; 4], seconds: u64) -> Lease {
        Lease {
            address: address.into(),
            prefix: 24,
            gateway: Some([10, 0, 2, 2].into()),
            dns: vec![[10, 0, 2, 3].into()],
            ntp: vec![],
            server: [10, 0, 2, 2].into(),
            lease_time: Some(Duration::from_secs(seconds)),
            renewal: None,
            rebinding: None,
        }
    }

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn times_default_to_half_and_seven_eighths_and_honour_the_options() {
        let t = Times::of(&lease([10, 0, 2, 15], 1000)).unwrap();
        assert_eq!((t.t1, t.t2, t.expiry), (s(500.0), s(875.0), s(1000.0)));
        let mut l = lease([10, 0, 2, 15], 1000);
        l.renewal = Some(s(100.0));
        l.rebinding = Some(s(200.0));
        let t = Times::of(&l).unwrap();
        assert_eq!((t.t1, t.t2), (s(100.0), s(200.0)));
        // Nonsense (T1 after T2, T2 after expiry) falls back to the defaults.
        l.renewal = Some(s(900.0));
        l.rebinding = Some(s(2000.0));
        let t = Times::of(&l).unwrap();
        assert_eq!((t.t1, t.t2), (s(500.0), s(875.0)));
        l.lease_time = Some(Duration::from_secs(u64::from(u32::MAX)));
        assert_eq!(Times::of(&l), None, "infinite lease");
        l.lease_time = None;
        assert_eq!(Times::of(&l), None);
    }

    #[test]
    fn the_schedule_sleeps_to_t1_then_retries_at_half_the_remaining_time() {
        let t = Times::of(&lease([10, 0, 2, 15], 1000)).unwrap();
        assert_eq!(next_action(&t, s(0.0), None), Action::Sleep(s(500.0)));
        assert_eq!(next_action(&t, s(500.0), None), Action::Renew);
        // Failed at 500: 375 s to T2, half is 187.5.
        assert_eq!(
            next_action(&t, s(500.0), Some(s(500.0))),
            Action::Sleep(s(187.5))
        );
        assert_eq!(next_action(&t, s(687.5), Some(s(500.0))), Action::Renew);
        // Close to T2 the wait is at least a minute, but never beyond T2.
        assert_eq!(
            next_action(&t, s(850.0), Some(s(850.0))),
            Action::Sleep(s(25.0))
        );
        assert_eq!(next_action(&t, s(875.0), Some(s(850.0))), Action::Rebind);
        assert_eq!(
            next_action(&t, s(875.0), Some(s(875.0))),
            Action::Sleep(s(62.5))
        );
        assert_eq!(next_action(&t, s(1000.0), Some(s(990.0))), Action::Expired);
    }

    #[test]
    fn times_a_server_gives_are_floored_at_a_minute() {
        let mut l = lease([10, 0, 2, 15], 0);
        l.renewal = Some(s(0.0));
        l.rebinding = Some(s(0.0));
        let t = Times::of(&l).expect("a lease of 0 s still gets renewed");
        assert_eq!((t.t1, t.t2, t.expiry), (s(60.0), s(60.0), s(60.0)));
        let mut l = lease([10, 0, 2, 15], 1000);
        l.renewal = Some(s(1.0));
        l.rebinding = Some(s(2.0));
        let t = Times::of(&l).unwrap();
        assert_eq!((t.t1, t.t2, t.expiry), (s(60.0), s(60.0), s(1000.0)));
    }

    #[test]
    fn the_notice_budget_allows_a_burst_then_one_per_ten_minutes_and_counts_the_rest() {
        let mut b = NoticeBudget::new(s(0.0));
        let shown: Vec<_> = (0..8)
            .filter_map(|i| b.pass(s(f64::from(i) * 60.0), format!("n{i}")))
            .collect();
        assert_eq!(shown, ["n0", "n1", "n2", "n3", "n4"]);
        assert_eq!(b.pass(s(599.0), "early".into()), None);
        assert_eq!(
            b.pass(s(600.0), "later".into()).as_deref(),
            Some("later (4 earlier DHCP notices not shown)")
        );
        assert_eq!(b.pass(s(1100.0), "again".into()), None);
        assert_eq!(
            b.pass(s(1200.0), "ok".into()).as_deref(),
            Some("ok (1 earlier DHCP notices not shown)")
        );
    }

    /// A clock that only moves when slept on.
    #[derive(Clone, Default)]
    struct FakeClock(Rc<Cell<Duration>>);

    impl Clock for FakeClock {
        fn now(&self) -> Duration {
            self.0.get()
        }
        fn sleep(&self, d: Duration) {
            self.0.set(self.0.get() + d);
        }
    }

    /// Answers from a script and records what it was asked and when.
    struct FakeServer {
        clock: FakeClock,
        answers: Vec<Result<Option<Lease>, String>>,
        calls: Calls,
        applied: Applied,
    }

    impl Server for FakeServer {
        fn renew(&mut self, _: &Lease, rebind: bool) -> Result<Option<Lease>, String> {
            let what = if rebind { "rebind" } else { "renew" };
            self.calls
                .borrow_mut()
                .push((self.clock.now().as_secs_f64(), what));
            // An unanswered attempt takes the client's timeout.
            self.clock.sleep(s(10.0));
            self.answers.remove(0)
        }
        fn discover(&mut self) -> Result<Lease, String> {
            self.calls
                .borrow_mut()
                .push((self.clock.now().as_secs_f64(), "discover"));
            Ok(lease([10, 0, 2, 99], 1000))
        }
        fn apply(&mut self, new: &Lease) -> Result<(), String> {
            self.applied.borrow_mut().push(new.address);
            Ok(())
        }
    }

    type Calls = Rc<RefCell<Vec<(f64, &'static str)>>>;
    type Applied = Rc<RefCell<Vec<Ipv4Addr>>>;

    fn renewer(
        answers: Vec<Result<Option<Lease>, String>>,
    ) -> (Renewer<FakeClock, FakeServer>, Calls, Applied) {
        let clock = FakeClock::default();
        let calls = Rc::new(RefCell::new(Vec::new()));
        let applied = Rc::new(RefCell::new(Vec::new()));
        let server = FakeServer {
            clock: clock.clone(),
            answers,
            calls: calls.clone(),
            applied: applied.clone(),
        };
        let r = Renewer::new(clock, server, "eth0".into(), lease([10, 0, 2, 15], 1000));
        (r, calls, applied)
    }

    fn run(r: &mut Renewer<FakeClock, FakeServer>, until: f64) -> Vec<String> {
        let mut notices = Vec::new();
        while r.clock.now() < s(until) {
            let text = r.step().expect("a finite lease keeps the loop going");
            if !text.is_empty() {
                notices.push(text);
            }
        }
        notices
    }

    #[test]
    fn a_renewal_at_t1_keeps_the_address_and_restarts_the_timers() {
        let (mut r, calls, applied) = renewer(vec![
            Ok(Some(lease([10, 0, 2, 15], 1000))),
            Ok(Some(lease([10, 0, 2, 15], 1000))),
        ]);
        let notices = run(&mut r, 1100.0);
        // Granted again at 510 (after the 10 s exchange): next T1 at 1010.
        assert_eq!(*calls.borrow(), [(500.0, "renew"), (1010.0, "renew")]);
        assert!(
            applied.borrow().is_empty(),
            "same address: nothing to apply"
        );
        assert_eq!(
            notices[0],
            "DHCP on eth0: lease of 10.0.2.15 renewed (renewing with 10.0.2.2) for 1000 s"
        );
    }

    #[test]
    fn unanswered_renewals_fall_back_to_rebinding_then_a_new_address_is_applied() {
        let none = || Err("no answer".to_string());
        let (mut r, calls, applied) = renewer(vec![
            none(),
            none(),
            none(),
            none(),
            Ok(Some(lease([10, 0, 2, 42], 1000))),
        ]);
        let notices = run(&mut r, 900.0);
        // 500 fails: retry at 500 + max(375/2, 60) = 687.5; then 687.5 + 93.75 =
        // 781.25; then 781.25 + max(46.9, 60) = 841.25; then T2 (875) comes
        // before 901.25: rebind, broadcast.
        assert_eq!(
            *calls.borrow(),
            [
                (500.0, "renew"),
                (687.5, "renew"),
                (781.25, "renew"),
                (841.25, "renew"),
                (875.0, "rebind")
            ]
        );
        assert_eq!(*applied.borrow(), [Ipv4Addr::new(10, 0, 2, 42)]);
        assert!(
            notices[0].contains("got no answer (no answer)"),
            "{notices:?}"
        );
        assert_eq!(
            notices.last().unwrap(),
            "DHCP on eth0: address 10.0.2.15/24 changed to 10.0.2.42/24 (gateway 10.0.2.2) for 1000 s"
        );
        assert_eq!(r.lease.address, Ipv4Addr::new(10, 0, 2, 42));
    }

    #[test]
    fn a_server_giving_t1_of_zero_gets_a_request_a_minute_and_few_notices() {
        let mut hostile = lease([10, 0, 2, 15], 1);
        hostile.renewal = Some(s(0.0));
        hostile.rebinding = Some(s(0.0));
        let (mut r, calls, _) = renewer((0..1000).map(|_| Ok(Some(hostile.clone()))).collect());
        r.lease = hostile.clone();
        let mut notices = Vec::new();
        for _ in 0..200 {
            let text = r.step().expect("a finite lease keeps the loop going");
            if !text.is_empty() {
                notices.push(text);
            }
            if r.clock.now() >= s(3600.0) {
                break;
            }
        }
        let calls = calls.borrow();
        assert!(calls.len() <= 61, "{} requests in an hour", calls.len());
        for pair in calls.windows(2) {
            assert!(pair[1].0 - pair[0].0 >= 60.0, "{pair:?}");
        }
        // 5 at once, then one per 10 minutes.
        assert!(notices.len() <= 11, "{notices:#?}");
    }

    #[test]
    fn the_first_renewal_knob_is_not_floored() {
        let (r, calls, _) = renewer(vec![Ok(Some(lease([10, 0, 2, 15], 1000)))]);
        let mut r = r.with_first_renewal(Some(s(3.0)));
        run(&mut r, 20.0);
        assert_eq!(*calls.borrow(), [(3.0, "renew")]);
        // The next T1 is the lease's own again: 13 + 500.
        assert_eq!(r.times().unwrap().t1, s(500.0));
    }

    #[test]
    fn a_nak_or_an_expired_lease_starts_over_with_discover() {
        let (mut r, calls, applied) = renewer(vec![Ok(None)]);
        let notices = run(&mut r, 600.0);
        assert_eq!(*calls.borrow(), [(500.0, "renew"), (510.0, "discover")]);
        assert_eq!(*applied.borrow(), [Ipv4Addr::new(10, 0, 2, 99)]);
        assert!(notices[0].starts_with("the server refused the renewal (NAK); DHCP on eth0: address 10.0.2.15/24 changed to 10.0.2.99/24"), "{notices:?}");

        let none = || Err("silence".to_string());
        let (mut r, calls, _) = renewer((0..20).map(|_| none()).collect());
        run(&mut r, 1010.0);
        let calls = calls.borrow();
        // Rebinds at 875, 937.5 and 997.5 (each taking 10 s), then DISCOVER.
        let rebinds: Vec<f64> = calls
            .iter()
            .filter(|c| c.1 == "rebind")
            .map(|c| c.0)
            .collect();
        assert_eq!(rebinds, [875.0, 937.5, 997.5], "{calls:?}");
        assert_eq!(calls.last().unwrap(), &(1007.5, "discover"), "{calls:?}");
    }
}
