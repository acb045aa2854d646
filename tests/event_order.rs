//! The order of task events as containerd re-broadcasts them (`ctr events`), for every
//! personality: a process's `/tasks/exit` reaches containerd before its Delete is answered, so
//! containerd's (or the shim's) `/tasks/delete` always follows it. Under the legacy runtime the
//! exit leaves through a `containerd publish` child process, slower than the Delete that
//! follows the Wait; before issue 13 the delete came first every time.

#[macro_use]
mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

/// Three `ctr run --rm sh -c 'exit 3'` in a row; for each, the exit (status 3) comes before
/// the delete in containerd's stream. An exec's exit likewise precedes the answer to its
/// Delete: `ctr task exec` (Wait, then Delete) returns only after the exit event is out.
fn exit_before_delete(s: Series, rt: Runtime) {
    let Some(c) = Ctd::start_series(s, Shims::Ours) else {
        return;
    };
    let events = Events::watch(&c);
    for _ in 0..3 {
        let id = c.id("order");
        let r = c.run(rt, &id, &["--rm"], &["sh", "-c", "exit 3"]);
        assert_eq!(r.code, 3, "{}", r.brief());
        events.wait_until("exit and delete", Duration::from_secs(20), |evs| {
            let mine: Vec<&Ev> = evs.iter().filter(|e| e.str("container_id") == id).collect();
            mine.iter().any(|e| e.topic == "/tasks/exit")
                && mine.iter().any(|e| e.topic == "/tasks/delete")
        });
        let topics: Vec<String> = events
            .all()
            .into_iter()
            .filter(|e| e.str("container_id") == id)
            .filter(|e| e.topic == "/tasks/exit" || e.topic == "/tasks/delete")
            .map(|e| e.topic)
            .collect();
        assert_eq!(
            topics,
            ["/tasks/exit", "/tasks/delete"],
            "{}: {id}:\n{}",
            rt.short,
            events.dump()
        );
        assert_eq!(events.of("/tasks/exit", &id)[0].num("exit_status"), 3);
    }
    // Execs: containerd publishes no delete event of its own for them, so compare times:
    // containerd stamps an event it receives through `publish` (the legacy runtime) with the
    // time it got it, and the shim's ttrpc envelope carries when it was queued. Either way the
    // exit must be stamped before `ctr task exec` (whose last step is the exec's Delete)
    // returned.
    let id = c.id("order-exec");
    c.run_detached(rt, &id, &[], &["sleep", "600"]);
    for i in 0..3 {
        let e = format!("x{i}");
        let r = c.ctr(&["task", "exec", "--exec-id", &e, &id, "sh", "-c", "exit 5"]);
        let returned = SystemTime::now();
        assert_eq!(r.code, 5, "{}", r.brief());
        events.wait_until(&format!("exit of {e}"), Duration::from_secs(20), |evs| {
            evs.iter()
                .any(|ev| ev.topic == "/tasks/exit" && ev.str("id") == e)
        });
        let ev = events
            .of("/tasks/exit", &id)
            .into_iter()
            .find(|ev| ev.str("id") == e)
            .unwrap();
        let at = stamped(&ev);
        assert!(
            at <= returned,
            "{}: exit of exec {e} reached containerd {:?} after its delete was answered:\n{}",
            rt.short,
            at.duration_since(returned).unwrap_or_default(),
            ev.line
        );
    }
    c.assert_clean();
}

/// The time `ctr events` printed for an event (Go's `time.Time` string:
/// `2006-01-02 15:04:05.999999999 -0700 MST`).
fn stamped(e: &Ev) -> SystemTime {
    let f: Vec<&str> = e.line.split_whitespace().collect();
    let num = |s: &str| {
        s.parse::<i64>()
            .unwrap_or_else(|_| panic!("time in {:?}", e.line))
    };
    let d: Vec<i64> = f[0].split('-').map(num).collect();
    let (hms, frac) = f[1].split_once('.').unwrap_or((f[1], "0"));
    let t: Vec<i64> = hms.split(':').map(num).collect();
    let nanos = num(&format!("{frac:0<9}")[..9]);
    let zone = num(f[2]);
    // Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
    let (y, m, day) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9, d[2])
    } else {
        (d[0], d[1] - 3, d[2])
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let offset = (zone / 100) * 3600 + (zone % 100) * 60;
    let secs = days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2] - offset;
    UNIX_EPOCH + Duration::new(secs as u64, nanos as u32)
}

series_matrix!(exit_before_delete);
