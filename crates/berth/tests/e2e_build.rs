//! `berth build` against buildah (Debian 12's 1.28) on the Dockerfile corpus in
//! `tests/build_corpus/` (see BUILDAH-NOTES.md there), the bad inputs in
//! `tests/build_corpus_bad/`, and the build cache. Root only; `BERTH_REQUIRE_ROOT=1` makes a
//! missing prerequisite (root, buildah, runc, debootstrap, busybox-static) a failure.
//!
//! * `buildah_reference_self_check`: the reference side alone (bases identical in both tools,
//!   every case builds with buildah, the normalizer is stable, run expectations hold).
//! * `build_corpus_matches_buildah`: every case built by berth equals buildah's build
//!   (`BERTH_BUILD_CASES=substring` runs the matching cases only; `BERTH_BUILD_DUMP=1` prints
//!   both normalized images of a failing case).
//! * `build_cache_noop_and_context_change`, `build_bad_inputs_fail_cleanly`.
//!
//! References are cached under `target/tmp/berth-build-cache/refs` (or `BERTH_TEST_CACHE`),
//! keyed by the case's files, the base images and the buildah version.

#[path = "build_support/mod.rs"]
mod build_support;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use build_support::image::{self, compare, CompareOptions};
use build_support::{out_text, run_ok, BadCase, Berth, Case, Harness};

fn selected(case: &str) -> bool {
    match std::env::var("BERTH_BUILD_CASES") {
        Ok(f) if !f.is_empty() => f.split(',').any(|p| case.contains(p)),
        _ => true,
    }
}

fn dump_wanted() -> bool {
    std::env::var("BERTH_BUILD_DUMP").as_deref() == Ok("1")
}

/// No root needed: the corpus is well-formed.
#[test]
fn corpus_files_are_valid() {
    let cases = Case::all();
    assert!(cases.len() >= 32, "only {} corpus cases", cases.len());
    for c in &cases {
        assert!(
            c.dir.join(&c.dockerfile).is_file(),
            "{}: no {}",
            c.name,
            c.dockerfile
        );
        if let Some(r) = &c.reference_dockerfile {
            assert!(c.dir.join(r).is_file(), "{}: no {r}", c.name);
        }
        for (df, _) in &c.prebuild {
            assert!(c.dir.join(df).is_file(), "{}: no {df}", c.name);
        }
        for k in c.reference_overrides.keys() {
            assert!(
                image::CONFIG_FIELDS.contains(&k.as_str()),
                "{}: reference_overrides.{k} is not a compared config field",
                c.name
            );
        }
    }
    let bad = BadCase::all();
    assert!(bad.len() >= 8, "only {} bad inputs", bad.len());
    for b in &bad {
        assert!(
            b.dir.join(&b.dockerfile).is_file(),
            "{}: no Dockerfile",
            b.name
        );
        assert!(!b.error_contains.is_empty(), "{}: nothing expected", b.name);
    }
}

/// Unit checks of the normalizer's pure parts.
#[test]
fn normalizer_masks_copy_digests() {
    let h = "0123456789abcdef".repeat(4);
    assert_eq!(
        image::mask_digests(&format!("/bin/sh -c #(nop) COPY file:{h} in /app/ ")),
        "/bin/sh -c #(nop) COPY file:<hash> in /app/ "
    );
    assert_eq!(
        image::mask_digests(&format!("COPY multi:{h} in /x/ dir:{h}")),
        "COPY multi:<hash> in /x/ dir:<hash>"
    );
    assert_eq!(image::mask_digests("file:abc"), "file:abc");
}

/// The reference side on its own: must pass before `berth build` exists.
#[test]
fn buildah_reference_self_check() {
    if !build_support::prerequisites() {
        return;
    }
    let t0 = Instant::now();
    let h = Harness::new();
    h.ensure_base("debian");
    let b = h.buildah();
    let mut problems: Vec<String> = vec![];

    // 1. The bases are the same in both tools: berth's saved archive vs buildah's export of
    //    the image it pulled from that archive.
    for base in ["busybox", "debian"] {
        let ours = image::load(&h.berth.save(base)).expect("berth's base");
        let out = h.work.path().join(format!("base-{base}"));
        b.push_dir(&format!("docker.io/library/{base}:latest"), &out);
        let theirs = image::load(&out).expect("buildah's base");
        assert!(
            ours.tree.len() > 10,
            "{base}: tree has {} paths",
            ours.tree.len()
        );
        for d in compare(&ours, &theirs, &CompareOptions { history_text: true }) {
            problems.push(format!("base {base}: {d}"));
        }
    }
    let t_bases = t0.elapsed();

    // 2. Every case builds with buildah (and is cached for `build_corpus_matches_buildah`).
    let cases = Case::all();
    let mut refs = vec![];
    for c in &cases {
        let t = Instant::now();
        match h.reference(c) {
            Ok(p) => {
                let img = image::load(&p).unwrap_or_else(|e| panic!("{}: {e}", c.name));
                for w in &img.warnings {
                    problems.push(format!("{}: reference: {w}", c.name));
                }
                eprintln!("reference {}: {:.1?}", c.name, t.elapsed());
                refs.push((c, p, img));
            }
            Err(e) => problems.push(e),
        }
    }
    let t_refs = t0.elapsed();

    // 3. The normalizer: a rebuild without cache equals the first build (mtimes, ids and
    //    layer bytes differ), and buildah's OCI export equals its Docker export (minus the
    //    Docker-only fields).
    for name in [
        "29-add-archives",
        "32-symlinks-hardlinks",
        "34-dir-replaced",
        "21-volume",
    ] {
        let Some((c, _, want)) = refs.iter().find(|(c, _, _)| c.name == name) else {
            continue;
        };
        let tag = format!("selfcheck-{name}");
        let mut flags = c.build_flags(&c.dockerfile);
        flags.push("--no-cache".into());
        let out = b.bud(&tag, &flags, &c.dir);
        assert!(out.status.success(), "{}", out_text(&out));
        let dir = h.work.path().join(&tag);
        b.push_dir(&tag, &dir);
        let again = image::load(&dir).expect("rebuild");
        for d in compare(&again, want, &c.compare_options()) {
            problems.push(format!("{name}: buildah rebuild differs: {d}"));
        }
        let oci = h.work.path().join(format!("{tag}.oci.tar"));
        b.push_oci_archive(&tag, &oci);
        let mut as_oci = image::load(&oci).expect("oci export");
        let mut docker = again.clone();
        for f in ["Healthcheck", "OnBuild", "Shell"] {
            as_oci.config.remove(f);
            docker.config.remove(f);
        }
        for d in compare(&as_oci, &docker, &c.compare_options()) {
            problems.push(format!(
                "{name}: oci-archive export differs from dir: export: {d}"
            ));
        }
    }

    // 4. The run expectations hold for buildah's images (loaded into berth).
    for (c, p, _) in &refs {
        let Some(want) = &c.run_stdout else { continue };
        let archive = h.work.path().join(format!("{}.docker.tar", c.name));
        let name = format!("ref-{}:latest", c.name);
        run_ok(
            Command::new("skopeo")
                .arg("copy")
                .arg(format!("dir:{}", p.display()))
                .arg(format!("docker-archive:{}:{name}", archive.display())),
        );
        h.berth
            .ok(&["load", "-i", archive.to_str().expect("utf-8")]);
        let out = h.berth.run(&["run", "--rm", &name]);
        let got = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || got != *want {
            problems.push(format!(
                "{}: `berth run --rm` of buildah's image: status {}, stdout {got:?}, want {want:?}; stderr {}",
                c.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }

    // 5. buildah rejects the bad inputs too (unless marked).
    for bad in BadCase::all() {
        let accepts = std::fs::read_to_string(bad.dir.join("expect.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .is_some_and(|v| v.get("buildah_accepts").is_some());
        let out = b.bud(
            &format!("bad-{}", bad.name),
            &bad.build_flags(),
            &bad.context(),
        );
        if out.status.success() != accepts {
            problems.push(format!(
                "bad input {}: buildah {} it:\n{}",
                bad.name,
                if accepts { "rejected" } else { "accepted" },
                out_text(&out)
            ));
        }
    }
    eprintln!(
        "buildah self-check: bases {:.1?}, {} references {:.1?}, total {:.1?}",
        t_bases,
        refs.len(),
        t_refs - t_bases,
        t0.elapsed()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Builds `case` with berth in `h` and compares it with buildah's; Err(report).
fn check_case(h: &Harness, c: &Case) -> Result<(), String> {
    let reference = h.reference(c)?;
    let mut want = image::load(&reference).map_err(|e| format!("reference: {e}"))?;
    for (k, v) in &c.reference_overrides {
        if v.is_null() {
            want.config.remove(k);
        } else {
            want.config.insert(k.clone(), v.clone());
        }
    }
    h.berth_prebuild(c)?;
    let tag = c.tag();
    let t = Instant::now();
    let out = h.berth.build(&tag, &c.build_flags(&c.dockerfile), &c.dir);
    if !out.status.success() {
        return Err(format!(
            "berth build failed ({}):\n{}",
            out.status,
            out_text(&out)
        ));
    }
    let took = t.elapsed();
    let got = image::load(&h.berth.save(&tag)).map_err(|e| format!("berth's image: {e}"))?;
    let mut diffs = compare(&got, &want, &c.compare_options());
    if let Some(expected) = &c.run_stdout {
        let out = h.berth.run(&["run", "--rm", &tag]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || stdout != *expected {
            diffs.push(format!(
                "berth run --rm {tag}: status {}, stdout {stdout:?}, want {expected:?}; stderr {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    eprintln!(
        "berth build {}: {took:.1?}, {} differences",
        c.name,
        diffs.len()
    );
    if diffs.is_empty() {
        return Ok(());
    }
    let mut report = diffs.join("\n");
    if dump_wanted() {
        report.push_str(&format!(
            "\n--- berth:\n{}--- buildah:\n{}",
            image::dump(&got),
            image::dump(&want)
        ));
    }
    Err(report)
}

#[test]
fn build_corpus_matches_buildah() {
    if !build_support::prerequisites() {
        return;
    }
    let h = Harness::new();
    let mut failed = vec![];
    let mut n = 0;
    for c in Case::all().iter().filter(|c| selected(&c.name)) {
        n += 1;
        if let Err(e) = check_case(&h, c) {
            failed.push(format!("=== {}\n{e}", c.name));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {n} corpus cases differ from buildah:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

fn write(dir: &Path, name: &str, content: &str) {
    std::fs::write(dir.join(name), content).expect("write");
}

/// A no-op rebuild uses the cache for every step and gives the same image; changing one
/// context file re-runs from the first step that uses it.
#[test]
fn build_cache_noop_and_context_change() {
    if !build_support::prerequisites() {
        return;
    }
    let h = Harness::new();
    let ctx = h.work.path().join("cache-ctx");
    std::fs::create_dir_all(&ctx).expect("mkdir");
    // Markers are printed by the steps; the instruction text does not contain them (the
    // two quoted halves), so they show only when a step really runs.
    write(
        &ctx,
        "Dockerfile",
        "FROM busybox\n\
         RUN echo \"step-one\"\"-ran\" && echo one > /one\n\
         COPY a.txt /a.txt\n\
         RUN echo \"step-two\"\"-ran\" && cat /a.txt > /two\n\
         COPY b.txt /b.txt\n\
         RUN echo \"step-three\"\"-ran\" && cat /b.txt > /three\n\
         CMD [\"cat\", \"/two\", \"/three\"]\n",
    );
    write(&ctx, "a.txt", "a1\n");
    write(&ctx, "b.txt", "b1\n");
    let build = |what: &str| {
        let t = Instant::now();
        let out = h.berth.build("cache-test", &[], &ctx);
        let text = out_text(&out);
        assert!(out.status.success(), "{what}: berth build failed:\n{text}");
        let id = h
            .berth
            .image_id("cache-test")
            .expect("cache-test is tagged");
        (text, id, t.elapsed())
    };
    let ran = |text: &str| -> Vec<&str> {
        ["step-one-ran", "step-two-ran", "step-three-ran"]
            .into_iter()
            .filter(|m| text.contains(m))
            .collect()
    };

    let (text, id1, cold) = build("first build");
    assert_eq!(
        ran(&text),
        ["step-one-ran", "step-two-ran", "step-three-ran"],
        "{text}"
    );

    let (text, id2, noop) = build("no-op rebuild");
    assert!(ran(&text).is_empty(), "no-op rebuild ran steps:\n{text}");
    assert!(
        text.to_lowercase().contains("cache"),
        "no-op rebuild does not say it used the cache:\n{text}"
    );
    assert_eq!(id1, id2, "no-op rebuild changed the image id");

    write(&ctx, "b.txt", "b2\n");
    let (text, id3, _) = build("b.txt changed");
    assert_eq!(ran(&text), ["step-three-ran"], "{text}");
    assert_ne!(id3, id2);

    write(&ctx, "a.txt", "a2\n");
    let (text, id4, _) = build("a.txt changed");
    assert_eq!(ran(&text), ["step-two-ran", "step-three-ran"], "{text}");
    assert_ne!(id4, id3);

    let out = h.berth.run(&["run", "--rm", "cache-test"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a2\nb2\n", "{out:?}");

    // Back to the first content: the cache still has those steps (same image as build 3).
    write(&ctx, "a.txt", "a1\n");
    let (text, id5, _) = build("a.txt reverted");
    assert!(ran(&text).is_empty(), "reverted build ran steps:\n{text}");
    assert_eq!(id5, id3);
    eprintln!("cache test: cold {cold:.1?}, no-op rebuild {noop:.1?}");
}

/// Every bad input fails with its expected message and leaves nothing tagged or running.
#[test]
fn build_bad_inputs_fail_cleanly() {
    if !build_support::prerequisites() {
        return;
    }
    let berth = Berth::new("berth-build-bad-");
    let tar = build_support::busybox_rootfs_tar(&berth.tmp);
    berth.import(&tar, "busybox", r#"["sh"]"#);
    let mut problems = vec![];
    for bad in BadCase::all() {
        let tag = format!("bad-{}", bad.name);
        let out = berth.build(&tag, &bad.build_flags(), &bad.context());
        let text = out_text(&out);
        if out.status.success() {
            problems.push(format!("{}: berth build succeeded:\n{text}", bad.name));
        }
        let missing: Vec<&String> = bad
            .error_contains
            .iter()
            .filter(|s| !text.contains(s.as_str()))
            .collect();
        if !missing.is_empty() {
            problems.push(format!("{}: output lacks {missing:?}:\n{text}", bad.name));
        }
        if berth.image_id(&tag).is_some() {
            problems.push(format!("{}: {tag} was tagged anyway", bad.name));
        }
    }
    let ps = berth.ok(&["ps", "-a", "-q"]);
    if !ps.trim().is_empty() {
        problems.push(format!("containers left behind: {ps}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
