"""Push and pull through huggingface_hub's own client against the loopback Hub-protocol server (tests/hub_server.py).

Every client runs in a subprocess: huggingface_hub reads HF_ENDPOINT and friends at import time, and each client gets
its own empty HF_HOME so that no real token or cache leaks in (and pulls really download).
"""

import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from hub_server import HubServer


REPO = Path(__file__).resolve().parents[1]
CLASSES = ["LyraModel", "LyraForSequenceRegression", "LyraForSequenceClassification", "LyraForTokenClassification"]
AUTO = {
    "LyraModel": "AutoModel",
    "LyraForSequenceRegression": "AutoModelForSequenceClassification",
    "LyraForSequenceClassification": "AutoModelForSequenceClassification",
    "LyraForTokenClassification": "AutoModelForTokenClassification",
}


@pytest.fixture(scope="session")
def hub():
    server = HubServer().start()
    yield server
    server.stop()


def client(hub, tmp_path, script, *, token=True, offline=False, home=None, args=()):
    """Run a Python client script against the server; returns the completed process."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    environment.update(
        HF_ENDPOINT=hub.url,
        HF_HUB_DISABLE_XET="1",
        HF_HOME=str(home or tmp_path / f"hf_home_{len(list(tmp_path.iterdir()))}"),
        HF_HUB_OFFLINE="1" if offline else "0",
        HF_HUB_DISABLE_TELEMETRY="1",
        OMP_NUM_THREADS="1",
        TQDM_DISABLE="1",
        PYTHONPATH=str(REPO),
    )
    if token:
        environment["HF_TOKEN"] = hub.token
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
        cwd=REPO,
    )


def ok(completed):
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed


PUSH_EVERY_HEAD = """
import sys, torch
from safetensors.torch import save_file
import lyra_hf
from lyra_hf import LyraConfig, LyraTokenizer

tokenizer = LyraTokenizer(padding_characters="J")
batch = tokenizer(["ACDEFGHIKJJ", "MNPQ"], padding=True, return_tensors="pt")
outputs = {}
for name in %r:
    torch.manual_seed(0)
    # The sequence heads hold a zero-shot prior: its table, a buffer, must travel with the weights.
    prior_length = 11 if "Sequence" in name else 0
    model = getattr(lyra_hf, name)(LyraConfig(hidden_size=16, state_size=8, num_labels=3, vocab_size=len(tokenizer),
    prior_length=prior_length)).eval()
    if prior_length:
        torch.nn.init.normal_(model.prior.table)
        torch.nn.init.normal_(model.prior.scale)
    model.push_to_hub(f"lab/{name.lower()}")
    tokenizer.push_to_hub(f"lab/{name.lower()}")
    with torch.no_grad():
        out = model(**batch)
    outputs[name] = (out.last_hidden_state if name == "LyraModel" else out.logits).contiguous()
save_file(outputs, sys.argv[1])
""" % (CLASSES,)

PULL_EVERY_HEAD = """
import sys, torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer
if sys.argv[2] == "without-package":
    sys.modules["lyra_hf"] = None  # remote code only
else:
    import lyra_hf
auto = {"AutoModel": AutoModel, "AutoModelForSequenceClassification": AutoModelForSequenceClassification,
        "AutoModelForTokenClassification": AutoModelForTokenClassification}
expected = load_file(sys.argv[1])
for name, auto_name in %r.items():
    options = {"trust_remote_code": True} if sys.argv[2] == "without-package" else {}
    tokenizer = AutoTokenizer.from_pretrained(f"lab/{name.lower()}", **options)
    model = auto[auto_name].from_pretrained(f"lab/{name.lower()}", **options).eval()
    batch = tokenizer(["ACDEFGHIKJJ", "MNPQ"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch)
    actual = out.last_hidden_state if name == "LyraModel" else out.logits
    assert torch.equal(actual, expected[name]), name
    print(name, type(model).__module__, "bit-identical")
""" % (AUTO,)


def test_push_every_head_and_pull_bit_identical_online_offline_and_as_remote_code(hub, tmp_path):
    outputs = tmp_path / "outputs.safetensors"
    ok(client(hub, tmp_path, PUSH_EVERY_HEAD, args=[outputs]))
    for name in CLASSES:
        files = hub.files(f"lab/{name.lower()}")
        assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"} <= set(
            files
        )
        assert {"configuration_lyra.py", "modeling_lyra.py", "tokenization_lyra.py"} <= set(files)
        assert not any(path.endswith((".bin", ".pt", ".pth", ".pkl")) for path in files)
        assert hub.repos[f"lab/{name.lower()}"].commits[hub.head(f"lab/{name.lower()}")]["model.safetensors"].lfs_oid
        assert "lyra" in yaml.safe_load(files["README.md"].decode().split("---")[1])["tags"]

    home = tmp_path / "pulling_home"
    pulled = ok(client(hub, tmp_path, PULL_EVERY_HEAD, token=False, home=home, args=[outputs, "with-package"]))
    assert pulled.stdout.count("bit-identical") == 4
    downloads = len([request for request in hub.requests if request.startswith("GET /lab/")])
    offline = ok(
        client(hub, tmp_path, PULL_EVERY_HEAD, token=False, offline=True, home=home, args=[outputs, "with-package"])
    )
    assert offline.stdout.count("bit-identical") == 4
    assert len([request for request in hub.requests if request.startswith("GET /lab/")]) == downloads  # from the cache
    remote = ok(client(hub, tmp_path, PULL_EVERY_HEAD, token=False, args=[outputs, "without-package"]))
    assert remote.stdout.count("bit-identical") == 4 and "transformers_modules" in remote.stdout


PUSH_TWO_BRANCHES = """
import json, sys, torch
from lyra_hf import LyraConfig, LyraForSequenceRegression
digests = {}
for seed, revision in [(1, None), (2, "v2")]:
    torch.manual_seed(seed)
    model = LyraForSequenceRegression(LyraConfig(hidden_size=16, state_size=8))
    model.push_to_hub("lab/branches", revision=revision)
    digests[revision or "main"] = float(model.score.weight.sum())
json.dump(digests, open(sys.argv[1], "w"))
"""

PULL_REVISIONS = """
import json, sys
import lyra_hf
from transformers import AutoModelForSequenceClassification
result = {}
for revision in sys.argv[2:]:
    model = AutoModelForSequenceClassification.from_pretrained("lab/branches", revision=revision)
    result[revision] = float(model.score.weight.sum())
json.dump(result, open(sys.argv[1], "w"))
"""


def test_branch_and_commit_pulls(hub, tmp_path):
    ok(client(hub, tmp_path, PUSH_TWO_BRANCHES, args=[tmp_path / "pushed.json"]))
    pushed = json.loads((tmp_path / "pushed.json").read_text())
    main_commit = hub.head("lab/branches")
    assert set(hub.repos["lab/branches"].branches) == {"main", "v2"}
    ok(client(hub, tmp_path, PULL_REVISIONS, token=False, args=[tmp_path / "pulled.json", "main", "v2", main_commit]))
    pulled = json.loads((tmp_path / "pulled.json").read_text())
    assert pulled["main"] == pulled[main_commit] == pushed["main"]
    assert pulled["v2"] == pushed["v2"] != pushed["main"]


def test_lyra_train_pushes_a_private_run_with_card_and_lyra_predict_pulls_it(hub, tmp_path):
    flags = [
        "--hidden-size",
        "16",
        "--state-size",
        "8",
        "--epochs",
        "1",
        "--max-train-samples",
        "200",
        "--max-eval-samples",
        "40",
    ]
    script = "import sys; from lyra_hf.train import main; sys.exit(main(sys.argv[1:]))"
    ok(
        client(
            hub,
            tmp_path,
            script,
            args=[
                *flags,
                "--output-dir",
                tmp_path / "run",
                "--push-to-hub",
                "lab/private-run",
                "--hub-private",
                "--hub-revision",
                "exp1",
                "--hub-license",
                "apache-2.0",
            ],
        )
    )
    repo = hub.repos["lab/private-run"]
    assert repo.private and set(repo.branches) == {"main", "exp1"}
    files = hub.files("lab/private-run", "exp1")
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "modeling_lyra.py",
        "results.json",
        "README.md",
    } <= set(files)
    results = json.loads(files["results.json"])
    metadata = yaml.safe_load(files["README.md"].decode().split("---")[1])
    assert metadata["library_name"] == "transformers" and metadata["license"] == "apache-2.0"
    assert {"lyra", "biology", "protein", "state-space-model"} <= set(metadata["tags"])
    metrics = {metric["type"]: metric["value"] for metric in metadata["model-index"][0]["results"][0]["metrics"]}
    assert metrics["spearmanr"] == pytest.approx(results["test"]["spearmanr"], abs=1e-4)
    card = files["README.md"].decode()
    assert (
        "## Intended use" in card
        and "## Limitations" in card
        and "ramesh2025lyra" in card
        and 'from_pretrained("lab/private-run"' in card
    )

    for url in (f"{hub.url}/api/models/lab/private-run", f"{hub.url}/lab/private-run/resolve/exp1/config.json"):
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            urllib.request.urlopen(url)
        assert anonymous.value.code == 404 and anonymous.value.headers["X-Error-Code"] == "RepoNotFound"

    (tmp_path / "in.csv").write_text("sequence\nACDEFGHIK\nMNPQRS\n")
    predict = "import sys; from lyra_hf.predict import main; sys.exit(main(sys.argv[1:]))"
    arguments = [
        "--model",
        "lab/private-run",
        "--revision",
        "exp1",
        "--input",
        tmp_path / "in.csv",
        "--output",
        tmp_path / "out.csv",
    ]
    ok(client(hub, tmp_path, predict, args=arguments))
    assert (tmp_path / "out.csv").read_text().splitlines()[0] == "sequence,predicted_fitness"
    anonymous = client(hub, tmp_path, predict, token=False, args=[*arguments, "--overwrite"])
    assert anonymous.returncode == 1 and anonymous.stderr.strip().splitlines()[-1].startswith("lyra-predict: error:")


PULL_ENSEMBLE_MEMBER = """
import sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from safetensors.torch import load_file
tokenizer = AutoTokenizer.from_pretrained("lab/ensemble", subfolder="member_1", trust_remote_code=True)
model = AutoModelForSequenceClassification.from_pretrained("lab/ensemble", subfolder="member_1", trust_remote_code=True)
saved = load_file(sys.argv[1])
assert all(torch.equal(model.state_dict()[key], value) for key, value in saved.items())
print(type(model).__name__, model.config.problem_type, len(tokenizer))
"""


def test_an_ensemble_pushes_with_its_members_in_subfolders_and_predicts_the_same_pulled(hub, tmp_path):
    flags = [
        "--hidden-size",
        "16",
        "--state-size",
        "8",
        "--epochs",
        "1",
        "--max-train-samples",
        "200",
        "--max-eval-samples",
        "40",
    ]
    train = "import sys; from lyra_hf.train import main; sys.exit(main(sys.argv[1:]))"
    ok(
        client(
            hub,
            tmp_path,
            train,
            args=[*flags, "--ensemble", "2", "--output-dir", tmp_path / "run", "--push-to-hub", "lab/ensemble"],
        )
    )
    files = hub.files("lab/ensemble", "main")
    for member in ("member_0", "member_1"):
        assert {
            f"{member}/config.json",
            f"{member}/model.safetensors",
            f"{member}/tokenizer.json",
            f"{member}/modeling_lyra.py",
        } <= set(files)
    assert json.loads(files["ensemble.json"])["members"] == ["member_0", "member_1"]
    assert json.loads(files["results.json"])["ensemble_size"] == 2
    assert 'subfolder="member_0"' in files["README.md"].decode()

    # A member loads alone from its subfolder, even without lyra-hf (remote code).
    member_weights = tmp_path / "run" / "member_1" / "best" / "model.safetensors"
    assert ok(client(hub, tmp_path, PULL_ENSEMBLE_MEMBER, args=[member_weights])).stdout.startswith(
        "LyraForSequenceClassification regression"
    )

    (tmp_path / "in.csv").write_text("sequence\nACDEFGHIK\nMNPQRS\nWWYV\n")
    predict = "import sys; from lyra_hf.predict import main; sys.exit(main(sys.argv[1:]))"
    ok(
        client(
            hub,
            tmp_path,
            predict,
            args=["--model", "lab/ensemble", "--input", tmp_path / "in.csv", "--output", tmp_path / "pulled.csv"],
        )
    )
    ok(
        client(
            hub,
            tmp_path,
            predict,
            args=[
                "--model",
                tmp_path / "run" / "best",
                "--input",
                tmp_path / "in.csv",
                "--output",
                tmp_path / "local.csv",
            ],
        )
    )
    pulled = (tmp_path / "pulled.csv").read_text()
    assert pulled.splitlines()[0] == "sequence,predicted_fitness,predicted_fitness_std"
    assert pulled == (tmp_path / "local.csv").read_text()


TRAINER_PUSH = """
import torch
from transformers import Trainer, TrainingArguments
from lyra_hf import LyraConfig, LyraForSequenceRegression, LyraTokenizer
from lyra_hf.data import collator_for, synthetic_fitness_dataset, tokenize_dataset
tokenizer = LyraTokenizer()
data = tokenize_dataset(synthetic_fitness_dataset(num_train=64, num_validation=16, num_test=4), tokenizer)
model = LyraForSequenceRegression(LyraConfig(hidden_size=16, state_size=8))
arguments = TrainingArguments("trainer-run", num_train_epochs=1, per_device_train_batch_size=16, report_to=[],
use_cpu=True,
                              push_to_hub=True, hub_model_id="lab/trainer-run", save_strategy="no")
trainer = Trainer(model=model, args=arguments, train_dataset=data["train"], data_collator=collator_for("regression",
tokenizer),
                  processing_class=tokenizer)
trainer.train()
trainer.push_to_hub()
"""


def test_trainer_push_to_hub(hub, tmp_path):
    ok(client(hub, tmp_path, "import os; os.chdir(%r)\n" % str(tmp_path) + TRAINER_PUSH))
    files = hub.files("lab/trainer-run")
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(files)


FAILING_PULLS = """
import sys
import lyra_hf
from huggingface_hub import hf_hub_download
from transformers import AutoModelForSequenceClassification
cases = {
    "missing repo": lambda: AutoModelForSequenceClassification.from_pretrained("lab/no-such-repo"),
    "missing revision": lambda: AutoModelForSequenceClassification.from_pretrained("lab/failures",
    revision="no-such-branch"),
    "missing file": lambda: hf_hub_download("lab/failures", "no-such-file.txt"),
}
for name, call in cases.items():
    try:
        call()
    except Exception as error:
        print(name, "->", type(error).__name__, "|", " ".join(str(error).split())[:300])
    else:
        print(name, "-> loaded")
"""


DROPPED_PUSH = """
import sys, torch
from huggingface_hub import HfApi, hf_hub_download
from safetensors.torch import load_file
from lyra_hf import LyraConfig, LyraForSequenceRegression, LyraTokenizer
torch.manual_seed(5)  # weights no other test pushes: the server stores LFS content once, and would not ask for it again
model = LyraForSequenceRegression(LyraConfig(hidden_size=16, state_size=8))
try:
    model.push_to_hub(sys.argv[1])
    print("first push succeeded")
except Exception as error:
    print("first push failed:", type(error).__name__)
print("head after it:", HfApi().repo_info(sys.argv[1]).sha)
model.push_to_hub(sys.argv[1])
pulled = load_file(hf_hub_download(sys.argv[1], "model.safetensors"))
same = pulled.keys() == model.state_dict().keys() and all(torch.equal(pulled[k], v) for k, v in
model.state_dict().items())
print("pulled weights equal the pushed ones" if same else "pulled weights differ")
"""


def test_failures_give_clear_errors_and_corrupt_nothing(hub, tmp_path):
    push = """
    import sys, torch
    from huggingface_hub import HfApi
    from lyra_hf import LyraConfig, LyraForSequenceRegression, LyraTokenizer
    torch.manual_seed(0)
    model = LyraForSequenceRegression(LyraConfig(hidden_size=16, state_size=8))
    try:
        model.push_to_hub(sys.argv[1], token=False)  # no token: refused, nothing created
    except Exception as error:
        print("refused:", " ".join(str(error).split())[:300])
    print("exists after the refusal:", HfApi().repo_exists(sys.argv[1]))
    model.push_to_hub(sys.argv[1])
    LyraTokenizer().push_to_hub(sys.argv[1])
    """
    pushed = ok(client(hub, tmp_path, push, args=["lab/failures"])).stdout.splitlines()
    assert pushed[0].startswith("refused:") and "401" in pushed[0] and pushed[1] == "exists after the refusal: False", (
        pushed
    )

    pulls = ok(client(hub, tmp_path, FAILING_PULLS, token=False)).stdout
    assert (
        "missing repo -> OSError | lab/no-such-repo is not a local folder and is not a valid model identifier" in pulls
    )
    assert "missing revision -> OSError | no-such-branch is not a valid git identifier" in pulls
    assert "missing file -> RemoteEntryNotFoundError" in pulls

    # The connection drops in the middle of an LFS upload, which the client retries, and then in the middle of the
    # commit upload: the push fails and the repo is unchanged; a second push succeeds with the retried upload's
    # content, and the weights pulled are the ones pushed (one client process for both pushes).
    before, files_before = hub.head("lab/failures"), hub.files("lab/failures")
    hub.drop_next("lfs")
    hub.drop_next("commit")
    pushes = ok(client(hub, tmp_path, DROPPED_PUSH, args=["lab/failures"])).stdout.splitlines()
    assert pushes[0].startswith("first push failed:") and pushes[1] == f"head after it: {before}", pushes
    assert pushes[2:] == ["pulled weights equal the pushed ones"], pushes
    assert hub.drops["lfs"] == 0 and hub.drops["commit"] == 0
    assert hub.head("lab/failures") != before and hub.files("lab/failures") != files_before

    (tmp_path / "in.csv").write_text("sequence\nACDEFGHIK\n")
    predict = "import sys; from lyra_hf.predict import main; sys.exit(main(sys.argv[1:]))"
    arguments = ["--model", "lab/failures", "--input", tmp_path / "in.csv", "--output", tmp_path / "out.csv"]
    ok(client(hub, tmp_path, predict, args=arguments))

    good = hub.files("lab/failures")
    hub.corrupt("lab/failures", "model.safetensors", good["model.safetensors"][: len(good["model.safetensors"]) // 2])
    truncated = client(hub, tmp_path, predict, args=[*arguments, "--overwrite"])
    assert truncated.returncode == 1
    assert (
        truncated.stderr.strip()
        .splitlines()[-1]
        .startswith("lyra-predict: error: lab/failures: model.safetensors is corrupt or truncated")
    )
    assert "Traceback" not in truncated.stderr

    config = json.loads(good["config.json"])
    hub.corrupt("lab/failures", "model.safetensors", good["model.safetensors"])
    hub.corrupt("lab/failures", "config.json", json.dumps({**config, "hidden_size": 32}).encode())
    mismatched = client(hub, tmp_path, predict, args=[*arguments, "--overwrite"])
    assert mismatched.returncode == 1 and "Traceback" not in mismatched.stderr
    last = mismatched.stderr.strip().splitlines()[-1]
    assert last.startswith("lyra-predict: error:") and "do not match the checkpoint's config.json" in last, last
    assert "(64, 16) in the weights, (64, 32) from config.json" in last or "from config.json" in last, last
    assert (tmp_path / "out.csv").exists()  # the earlier good output is untouched
