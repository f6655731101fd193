#!/usr/bin/env python3
"""The seed's PyTorch training on a GPU, for the side-by-side timing with `audio-mnist` built
with `--features cuda` (support/bench/gpu_vs_torch.sh).

    torch_gpu.py FEATURES.safetensors --test-speakers theo --val-speakers nicolas
        the seed recipe on features written by `audio-mnist features --recipe seed`, the same
        loop as ../shared/reference/seed_pytorch.py train, on CUDA; one JSON line
    torch_gpu.py --synthetic
        training and inference samples/s on random batches (torch_bench.py's measurement), on CUDA

Needs torch with CUDA, numpy, safetensors, and seed_pytorch.py (its build_model) beside this
file or in SEED_PYTORCH_DIR.
"""
import argparse, json, os, sys, time
import numpy as np
import torch, torch.nn as nn

sys.path.insert(0, os.environ.get("SEED_PYTORCH_DIR", os.path.dirname(os.path.abspath(__file__))))
from seed_pytorch import build_model  # noqa: E402

dev = torch.device("cuda")


def synthetic():
    torch.manual_seed(0)
    m = build_model(torch, nn).to(dev); opt = torch.optim.AdamW(m.parameters(), 1e-3); lf = nn.CrossEntropyLoss()
    x = torch.randn(64, 1, 128, 32, device=dev); y = (torch.arange(64) % 10).to(dev)
    m.train()
    for _ in range(10):
        opt.zero_grad(); lf(m(x), y).backward(); opt.step()
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(100):
        opt.zero_grad(); lf(m(x), y).backward(); opt.step()
    torch.cuda.synchronize(); train = 6400 / (time.perf_counter() - t)
    m.eval()
    with torch.no_grad():
        m(x); torch.cuda.synchronize(); t = time.perf_counter()
        for _ in range(100):
            m(x).argmax(1)
        torch.cuda.synchronize(); infer = 6400 / (time.perf_counter() - t)
    return {"train_samples_per_second": round(train, 1), "infer_samples_per_second": round(infer, 1)}


def load(path):
    from safetensors.numpy import load_file
    from safetensors import safe_open
    t = load_file(path)
    with safe_open(path, "np") as f:
        speakers = json.loads(f.metadata()["speakers"])
    return t["features"], t["digits"], np.array(speakers)


def train(a):
    torch.manual_seed(42); np.random.seed(42)
    x, y, spk = load(a.features)
    test = set(a.test_speakers.split(",")); val = set(a.val_speakers.split(","))
    tr = np.array([s not in test and s not in val for s in spk])
    va = np.array([s in val for s in spk]); te = np.array([s in test for s in spk])
    mean, std = x[tr].mean(), x[tr].std()
    X = torch.tensor((x - mean) / std).unsqueeze(1).to(dev); Y = torch.tensor(y).to(dev)
    model = build_model(torch, nn).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=2)
    lossf = nn.CrossEntropyLoss()
    tri = np.where(tr)[0]
    best, best_state, bad, log = -1.0, None, 0, []

    def acc(mask):
        model.eval()
        with torch.no_grad():
            idx = torch.tensor(np.where(mask)[0], device=dev)
            pred = torch.cat([model(X[idx[i:i + 256]]).argmax(1) for i in range(0, len(idx), 256)])
            return (pred == Y[idx]).float().mean().item()

    torch.cuda.synchronize(); t0 = time.perf_counter(); seen = 0
    for epoch in range(a.epochs):
        model.train(); rng = np.random.default_rng(42 + epoch); perm = rng.permutation(tri)
        for i in range(0, len(perm), 64):
            b = torch.tensor(perm[i:i + 64], device=dev)
            opt.zero_grad(); loss = lossf(model(X[b]), Y[b]); loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); seen += len(b)
        va_acc = acc(va); sched.step(va_acc); log.append(round(va_acc, 4))
        if va_acc > best:
            best, bad = va_acc, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= a.patience:
                break
    torch.cuda.synchronize(); train_s = time.perf_counter() - t0
    model.load_state_dict(best_state)
    return {"epochs": len(log), "val_curve": log, "train_seconds": round(train_s, 2),
            "train_samples_per_s": round(seen / train_s, 1), "test_accuracy": round(acc(te), 4)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("features", nargs="?"); ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--test-speakers"); ap.add_argument("--val-speakers")
    ap.add_argument("--epochs", type=int, default=30); ap.add_argument("--patience", type=int, default=5)
    a = ap.parse_args()
    out = synthetic() if a.synthetic else train(a)
    out.update({"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
