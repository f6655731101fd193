//! The notebook really runs in Jupyter: `notebooks/audio_mnist.ipynb` is executed headless
//! with the evcxr kernel (`notebooks/execute.py`, nbclient) on 300 FSDD recordings, its outputs
//! are checked, its HTML export is rendered in headless Chromium, and a missing or empty data
//! folder must give one clear message.
//!
//! Runs under CI (`AUDIO_MNIST_REQUIRE_SHARED=1`, set by `.ci/run`) or with
//! `AUDIO_MNIST_NOTEBOOK=1`; elsewhere it is skipped with the reason (it takes minutes, and the
//! first time evcxr_jupyter's install and the kernel's build of Candle take half an hour). It
//! installs evcxr_jupyter (`cargo install --locked`) and nbclient/nbconvert (`pip`) when
//! missing; Chromium is a system package (`.ci/run` installs it).
//! The executed notebook, its HTML export and the screenshot are kept in `out/notebook-test/`
//! for people to look at.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn found(program: &str, arg: &str) -> bool {
    Command::new(program).arg(arg).output().is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
}

/// evcxr_jupyter (kernel registered) and nbclient + nbconvert, installed when missing, and the
/// path of a headless Chromium (a system package: `.ci/run` installs it).
fn tools() -> PathBuf {
    // cargo's bin folder first: it need not be on PATH.
    let evcxr = || {
        std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .map(|h| h.join("bin/evcxr_jupyter"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("evcxr_jupyter"))
    };
    if !found(&evcxr().to_string_lossy(), "--help") {
        eprintln!("installing evcxr_jupyter (cargo install --locked evcxr_jupyter; ~15 min on 2 cores)");
        // Its own build folder: `cargo test` may still hold the lock on CARGO_TARGET_DIR.
        run(Command::new("cargo")
            .args(["install", "--locked", "evcxr_jupyter"])
            .env("CARGO_TARGET_DIR", std::env::temp_dir().join("audio-mnist-evcxr-install")));
    }
    let py_ok = || {
        Command::new("python3")
            .args(["-c", "import nbclient, nbconvert, nbformat, ipykernel"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !py_ok() {
        run(Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "nbclient>=0.10",
            "nbconvert>=7",
            "nbformat",
            "ipykernel",
        ]));
    }
    // Register the kernel (idempotent, cheap).
    run(Command::new(evcxr()).arg("--install"));
    let chromium =
        ["chromium", "chromium-browser", "google-chrome"].into_iter().find(|c| found(c, "--version"));
    PathBuf::from(chromium.expect("no headless Chromium (apt-get install chromium; .ci/run does)"))
}

/// 300 FSDD recordings (6 speakers x 10 digits x 5 takes), linked into `dir`.
fn small_fsdd(shared: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for speaker in ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"] {
        for digit in 0..10 {
            for take in 0..5 {
                let name = format!("{digit}_{speaker}_{take}.wav");
                let from = shared.join("fsdd/recordings").join(&name);
                assert!(from.exists(), "missing {}", from.display());
                std::os::unix::fs::symlink(&from, dir.join(&name)).unwrap();
            }
        }
    }
}

/// Execute the notebook (first `cells` code cells, or all) with `data` as its data folder.
fn execute(data: &Path, work: &Path, cells: Option<usize>) -> (bool, serde_json::Value, String) {
    // evcxr resolves the kernel's dependencies afresh; starting its build folder from our
    // Cargo.lock gives it the versions the rest of the suite tested (cargo keeps what fits).
    let build = repo().join("notebooks/evcxr-build");
    if build.is_dir() && !build.join("Cargo.lock").exists() {
        std::fs::copy(repo().join("Cargo.lock"), build.join("Cargo.lock"))
            .expect("seeding evcxr's Cargo.lock");
    }
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("notebooks/execute.py"))
        .arg(repo().join("notebooks/audio_mnist.ipynb"))
        .arg("--out")
        .arg(work)
        .env("AUDIO_MNIST_DATA", data)
        .env("AUDIO_MNIST_OUT", work.join("out"))
        .env("AUDIO_MNIST_CACHE", work.join("cache"))
        .env("AUDIO_MNIST_EPOCHS", "3");
    if let Some(n) = cells {
        cmd.arg("--cells").arg(n.to_string());
    }
    let status = cmd.status().expect("running notebooks/execute.py");
    let nb: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(work.join("audio_mnist.ipynb")).expect("executed notebook"),
    )
    .expect("notebook JSON");
    let html = std::fs::read_to_string(work.join("audio_mnist.html")).expect("HTML export");
    (status.success(), nb, html)
}

fn code_cells(nb: &serde_json::Value) -> Vec<&serde_json::Value> {
    nb["cells"].as_array().unwrap().iter().filter(|c| c["cell_type"] == "code").collect()
}

fn source(cell: &serde_json::Value) -> String {
    match &cell["source"] {
        serde_json::Value::Array(a) => a.iter().filter_map(|s| s.as_str()).collect(),
        s => s.as_str().unwrap_or_default().to_string(),
    }
}

/// Everything a cell showed: streams, rich outputs and errors, as text.
fn output_text(cell: &serde_json::Value) -> String {
    let mut text = String::new();
    for o in cell["outputs"].as_array().into_iter().flatten() {
        for key in ["text", "evalue", "traceback"] {
            match &o[key] {
                serde_json::Value::Array(a) => {
                    a.iter().filter_map(|s| s.as_str()).for_each(|s| text.push_str(s))
                }
                serde_json::Value::String(s) => text.push_str(s),
                _ => {}
            }
        }
        if let Some(data) = o["data"].as_object() {
            for v in data.values() {
                match v {
                    serde_json::Value::Array(a) => {
                        a.iter().filter_map(|s| s.as_str()).for_each(|s| text.push_str(s))
                    }
                    serde_json::Value::String(s) => text.push_str(s),
                    _ => {}
                }
            }
        }
        text.push('\n');
    }
    text
}

fn cell_with<'a>(cells: &[&'a serde_json::Value], marker: &str) -> &'a serde_json::Value {
    cells
        .iter()
        .find(|c| source(c).contains(marker))
        .unwrap_or_else(|| panic!("no code cell contains {marker:?}"))
}

fn errored(cell: &serde_json::Value) -> bool {
    cell["outputs"].as_array().into_iter().flatten().any(|o| o["output_type"] == "error")
}

/// One test at a time: kernels share evcxr's build folder (`notebooks/evcxr.toml`), and two
/// builds in it (or two `cargo install`s of evcxr_jupyter) at once trip over each other's files.
static KERNEL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Shared data and the tools, or `None` (reason printed): the notebook tests run under CI
/// (`AUDIO_MNIST_REQUIRE_SHARED=1`, tools installed when missing) or with `AUDIO_MNIST_NOTEBOOK=1`.
fn prerequisites() -> Option<(PathBuf, PathBuf)> {
    let shared = common::shared_data()?;
    let ci = std::env::var("AUDIO_MNIST_REQUIRE_SHARED").is_ok_and(|v| v == "1");
    let asked = std::env::var("AUDIO_MNIST_NOTEBOOK").is_ok_and(|v| v == "1");
    if !ci && !asked {
        eprintln!("SKIPPED: set AUDIO_MNIST_NOTEBOOK=1 to execute the notebook (CI does)");
        return None;
    }
    Some((shared, tools()))
}

#[test]
fn notebook_runs_top_to_bottom_and_renders() {
    let _kernel = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((shared, chromium)) = prerequisites() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("fsdd");
    small_fsdd(&shared, &data);
    let kept = repo().join("out/notebook-test");
    let _ = std::fs::remove_dir_all(&kept);
    let work = kept.clone();

    let (ok, nb, html) = execute(&data, &work, None);
    let cells = code_cells(&nb);
    for c in &cells {
        assert!(!errored(c), "cell failed:\n{}\n--- output:\n{}", source(c), output_text(c));
    }
    assert!(ok, "notebook execution failed (see {})", work.display());
    assert!(cells.iter().all(|c| c["execution_count"].is_number()), "a cell was not executed");

    let setup = output_text(cell_with(&cells, "nb::setup()"));
    assert!(setup.contains("candle") && setup.contains("device: CPU"), "setup printed: {setup}");
    let eval = output_text(cell_with(&cells, "test(&trained.model"));
    assert!(eval.contains("test accuracy:"), "evaluation cell printed: {eval}");
    assert!(eval.contains("precision") && eval.contains("macro avg"), "no classification report: {eval}");
    // Which corpora and voices the model learns from: 6 FSDD speakers, 300 files, in three parts.
    let learned = output_text(cell_with(&cells, "nb::learned_from"));
    assert!(
        learned.contains("train") && learned.contains("validation") && learned.contains("test"),
        "the learned-from cell showed: {learned}"
    );
    let training = output_text(cell_with(&cells, "fit(&prep"));
    // The default recipe (`best`) trains three networks: a line per epoch of each.
    for k in 1..=3 {
        let lines = training.lines().filter(|l| l.starts_with(&format!("member {k}/3  epoch "))).count();
        assert_eq!(lines, 3, "one line per epoch of member {k} expected: {training}");
    }
    // The layer table comes from the network's description, in forward order (the third
    // block before the classifier).
    let summary = output_text(cell_with(&cells, "model_summary"));
    let (conv3, fc1) = (summary.find("conv3"), summary.find("fc1"));
    assert!(conv3.is_some() && conv3 < fc1, "model summary out of order: {summary}");
    let explorer = cell_with(&cells, "explorer.show()");
    let explorer_html = explorer["outputs"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|o| {
            o["data"]["text/html"].as_str().map(str::to_string).or_else(|| {
                o["data"]["text/html"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|s| s.as_str()).collect::<String>())
            })
        })
        .expect("the confusion-matrix cell shows HTML");
    assert!(explorer_html.contains("Plotly.newPlot") && explorer_html.contains("plotly_click"));
    assert!(explorer_html.contains("data:audio/wav;base64,"), "no audio player in the explorer");
    assert!(
        explorer_html.contains("relevance for predicted") && explorer_html.contains("alt=\\\"relevance for "),
        "no relevance maps in the explorer"
    );
    let per_digit = output_text(cell_with(&cells, "explorer.digit_relevance("));
    assert!(
        per_digit.contains("mean relevance for the true digit"),
        "the per-digit relevance cell showed: {per_digit}"
    );
    let sides = output_text(cell_with(&cells, "explorer.confusion_relevance("));
    assert!(
        sides.contains("what each side saw") && sides.contains("minus"),
        "the confusion relevance cell showed: {sides}"
    );
    let one_cell = output_text(cell_with(&cells, "explorer.cell("));
    assert!(one_cell.contains("file(s)") && one_cell.contains("<table"), "explorer.cell showed: {one_cell}");
    let predicted = output_text(cell_with(&cells, "ModelChoice::file_or_bundled"));
    // The notebook's own model answers (the bundled one only when none was trained).
    assert!(predicted.contains("model: ") && predicted.contains("model.safetensors"), "{predicted}");
    assert!(!predicted.contains("bundled"), "the predict cell used the bundled model: {predicted}");
    let answer = predicted.split(" -> ").nth(1).and_then(|r| r.split(" (confidence ").next());
    let is_label = |a: &str| a == "not a digit" || a.parse::<u8>().is_ok_and(|d| d < 10);
    assert!(answer.is_some_and(is_label), "the predict cell printed: {predicted}");
    // plotly.js travels with the first figure, so the export renders offline.
    assert_eq!(html.matches("plotly.js v3").count(), 1, "plotly.js must be in the HTML export, once");
    assert_eq!(
        html.matches("Plotly.newPlot(\"am-fig").count(),
        11,
        "3 looks + curves + confusion matrix + 2 relevance figures + robustness + before/after \
         adapting + a listened sequence"
    );
    // Your voice: the first test speaker's other takes before and after adapting on three.
    let personal = serde_json::to_string(&cell_with(&cells, "adapt_speaker(")["outputs"]).unwrap();
    assert!(
        personal.contains("the model as trained") && personal.contains("after adapting on 3 take(s) a digit"),
        "the adaptation cell showed: {personal}"
    );
    let listened = cell_with(&cells, "transcribe(&predictor");
    let said = output_text(listened);
    assert!(said.contains("said ") && said.contains(", heard "), "the listen cell printed: {said}");
    assert!(serde_json::to_string(&listened["outputs"]).unwrap().contains("data:audio/wav;base64,"));
    let robust = cell_with(&cells, "robustness(&[model_file");
    assert!(
        serde_json::to_string(&robust["outputs"]).unwrap().contains("babble 10 dB SNR"),
        "no robustness figure"
    );
    for f in [
        "model.safetensors",
        "training_metrics.png",
        "confusion_matrix.png",
        "training_log.csv",
        "classification_report.txt",
        "split.json",
    ] {
        let p = work.join("out").join(f);
        assert!(p.metadata().is_ok_and(|m| m.len() > 0), "{} was not written", p.display());
    }
    // The stored notebook has no outputs (no multi-MB diffs in git).
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("notebooks/audio_mnist.ipynb")).unwrap())
            .unwrap();
    assert!(code_cells(&stored).iter().all(|c| c["outputs"].as_array().is_some_and(|o| o.is_empty())));

    // The export in a real browser: plotly draws an <svg class="main-svg"> per figure.
    let page = work.join("audio_mnist.html");
    let url = format!("file://{}", page.display());
    let browser = |extra: &[&str]| {
        let out = Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--virtual-time-budget=30000",
            ])
            .args(extra)
            .output()
            .expect("running chromium");
        assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let dom = String::from_utf8_lossy(&browser(&["--dump-dom", &url])).to_string();
    let drawn = dom.matches("class=\"main-svg\"").count();
    assert!(drawn >= 5, "only {drawn} plotly figure layers were drawn in Chromium");
    // Headless Chromium paints nothing when the page is scrolled (a URL #fragment or
    // scrollIntoView give a white image), so a copy of the page hides the cells before the
    // confusion-matrix section once everything has run, bringing it to the top.
    let section = work.join("confusion_matrix_section.html");
    let hide = r#"<script>window.addEventListener("load", function() {
  var cells = Array.prototype.slice.call(document.querySelectorAll(".jp-Cell"));
  var i = cells.findIndex(function(c) { return c.querySelector('[id="12.-Exploring-the-confusion-matrix"]'); });
  cells.slice(0, Math.max(i, 0)).forEach(function(c) { c.style.display = "none"; });
});</script></body>"#;
    std::fs::write(&section, html.replacen("</body>", hide, 1)).unwrap();
    let shot = work.join("confusion_matrix_section.png");
    browser(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1200,1400",
        &format!("file://{}", section.display()),
    ]);
    // The heatmap and its colour bar are blue; a figure that failed to draw leaves white.
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let blue = buf[..info.buffer_size()]
        .chunks(channels)
        .filter(|p| p[2] as i32 > p[0] as i32 + 40 && p[1] > p[0] && p[2] > 90)
        .count();
    assert!(blue > 5_000, "the confusion-matrix screenshot has only {blue} blue pixels: {}", shot.display());
    eprintln!("notebook executed; export, screenshot in {}", work.display());
}

#[test]
fn notebook_without_data_says_so_in_one_message() {
    let _kernel = KERNEL.lock().unwrap_or_else(|e| e.into_inner());
    if prerequisites().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "not a recording").unwrap();
    for (data, expect) in [(tmp.path().join("missing"), "does not exist"), (empty, "no recordings named")] {
        let work = tmp.path().join(format!("run-{}", data.file_name().unwrap().to_string_lossy()));
        // setup, configuration, metadata: the run must stop at the first failing one.
        let (ok, nb, _) = execute(&data, &work, Some(3));
        assert!(!ok, "the notebook ran without data at {}", data.display());
        let cells = code_cells(&nb);
        let failed: Vec<_> = cells.iter().filter(|c| errored(c)).collect();
        assert_eq!(failed.len(), 1, "exactly one cell should fail");
        let text = output_text(failed[0]);
        assert!(text.contains(expect), "expected {expect:?} in: {text}");
        for noise in ["panicked", "error[E", "RUST_BACKTRACE", "Stack backtrace"] {
            assert!(!text.contains(noise), "{noise:?} in the message: {text}");
        }
        assert!(text.len() < 800, "the message is a wall of text ({} chars): {text}", text.len());
    }
}
