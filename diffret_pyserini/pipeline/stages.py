"""The main job's stages: BM25, encoding, impact index, search and evaluation, each cached by fingerprint.

See the package docstring for the folder layout. Indexing and stage bookkeeping live below (index/lucene.py,
fingerprint.py), shared with training; this module only orders the stages and names the outputs.
"""
from __future__ import annotations

import logging
from pathlib import Path

from diffret_pyserini.atomic import atomic_write_json, atomic_write_text
from diffret_pyserini.datasets import Dataset, check_dataset, load_queries, normalize_text, resolve_dataset
from diffret_pyserini.fingerprint import fingerprint, folder_lock
from diffret_pyserini.index.lucene import bm25_fingerprint, bm25_index, dataset_key
from diffret_pyserini.pipeline.arguments import BASELINE_SYSTEMS, PipelineArguments
from diffret_pyserini.pipeline.cells import EncodedCell, encode_stages, model_tag, search_cell, slug  # noqa: F401
from diffret_pyserini.search.systems import HYBRID_SYSTEMS, SYSTEMS, SearchInputs, uses_model

log = logging.getLogger("diffret_pyserini.pipeline")  # shown as [pipeline]
EVIDENCE_FILE = "choices-evidence.json"  # beside choices.json: each automatic choice's dev figures and interval


def search_and_evaluate(dataset: Dataset, inputs: SearchInputs, run_dir: Path, index_fp: dict[str, str],
                        args: PipelineArguments, systems: list[str], alphas: dict[str, float] | None = None,
                        ) -> dict[str, dict[str, float]]:
    """Search `systems` over one cell into run_dir (cells.search_cell), then evaluate them (evaluate_runs)."""
    return evaluate_runs(dataset, search_cell(inputs, run_dir, index_fp, args, systems, alphas), run_dir)


def evaluate_runs(dataset: Dataset, paths: dict[str, Path], run_dir: Path) -> dict[str, dict[str, float]]:
    """trec_eval on each run of {system: path} with the dataset's qrels, and run_dir's report; {} without qrels."""
    from diffret_pyserini.eval.trec_eval import convert_qrels, evaluate_run, write_report

    if dataset.qrels_path is not None:  # TREC qrels beside the runs, for `python -m pyserini.eval.trec_eval`
        convert_qrels(dataset.qrels_path, run_dir.parent / "qrels.txt")
    with folder_lock(run_dir):
        metrics: dict[str, dict[str, float]] = {}
        for system, run_path in paths.items():
            if dataset.qrels_path is not None:
                metrics[system] = evaluate_run(dataset.qrels_path, run_path)
        if metrics:
            write_report(metrics, run_dir, f"{dataset.name} / {run_dir.name}", runs=paths,
                         qrels_path=dataset.qrels_path)
    return metrics


def auto_stage(dataset: Dataset, args: PipelineArguments, topics: dict[str, str], model: str, bm25: Path,
               bm25_fp: str, runs_root: Path, run_dir: Path) -> dict[str, dict[str, float]]:
    """--kq auto: every candidate Kq searched at the model's Kp, then one run per (system, method), written as
    run_dir/<system>-kq-<method>.trec and evaluated like the fixed systems."""
    from diffret_pyserini.eval.runs import write_trec_run
    from diffret_pyserini.eval.trec_eval import evaluate_run, write_report
    from diffret_pyserini.pipeline.adaptive_k import AUTO_SYSTEMS, auto_system_name, gather, select, train_learned
    from diffret_pyserini.pipeline.cells import role_encoders

    systems = [s for s in args.systems if s in AUTO_SYSTEMS]
    if not systems:
        log.info(f"--kq auto: none of {AUTO_SYSTEMS} in --systems; nothing to select for")
        return {}
    kp = role_encoders(model, args)[2]["kp"]
    ks = sorted(set(args.kq_candidates))
    g = gather(dataset, args, topics, model, ks, kp, systems, bm25, bm25_fp, runs_root)
    selectors = (train_learned(dataset, args, model, ks, kp, systems, bm25, bm25_fp, runs_root)
                 if "learned" in args.kq_method else {})
    metrics: dict[str, dict[str, float]] = {}
    for system in systems:
        for method in args.kq_method:
            run, choice = select(method, g, system, selectors.get(system))
            name = auto_system_name(system, method)
            path = write_trec_run(run, run_dir / f"{name}.trec", tag=name, k=args.hits)
            if choice is not None:
                atomic_write_json(run_dir / f"{name}.choice.json", choice)
            if dataset.qrels_path is not None:
                metrics[name] = evaluate_run(dataset.qrels_path, path)
    if metrics:  # the fixed systems' table with the adaptive rows added
        from diffret_pyserini.eval.trec_eval import read_metrics

        fixed = read_metrics(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}
        rows = {**fixed, **metrics}
        write_report(rows, run_dir, f"{dataset.name} / {run_dir.name} (+ --kq auto)", qrels_path=dataset.qrels_path,
                     runs={r: run_dir / f"{r}.trec" for r in rows if (run_dir / f"{r}.trec").is_file()})
    return metrics


def peers_stage(dataset: Dataset, args: PipelineArguments, topics: dict[str, str], key: str,
                peers: list[str]) -> tuple[dict[str, dict[str, float]], dict[str, Path]]:
    """The peers (peers.py, through Pyserini's own encoders) on the same collection and topics: runs under
    runs/<dataset>/peers/, rows named peer-*, reported in the main table (a table of the peers alone, beside
    BM25, is `python -m diffret_pyserini.pipeline.peers`'s); returns ({row: metrics}, {row: run path})."""
    from diffret_pyserini.eval.trec_eval import evaluate_run
    from diffret_pyserini.model.device import parse_device
    from diffret_pyserini.pipeline.peers import search_peers

    out = Path(args.runs) / key / "peers"
    paths = search_peers(dataset, topics, args.indexes, out, peers, hits=args.hits, threads=args.threads,
                         batch_size=args.batch_size, device=str(parse_device(args.device)), force=args.force)
    if dataset.qrels_path is None:
        return {}, paths
    return {row: evaluate_run(dataset.qrels_path, path) for row, path in paths.items()}, paths


def wants_finetune(args: PipelineArguments, dataset, source: str | None = None) -> bool:
    """'yes'/'no' as given; 'auto': the embedded default model on a corpus with enough pseudo-queries of the
    chosen source (train/sources.py); otherwise say why it is skipped."""
    from diffret_pyserini.model.packaged import resolve_model_path
    from diffret_pyserini.train.sources import MIN_PSEUDO_QUERIES, MIN_WORDS, choose_source

    if args.finetune != "auto":
        return args.finetune == "yes"
    if resolve_model_path(args.model) != resolve_model_path(PipelineArguments.model):
        log.info("--finetune auto: skipped, the recipe is tuned for the embedded default model only "
                 "(--finetune yes forces it)")
        return False
    source = source or choose_source(dataset.corpus_path)[0]
    if source == "titles":
        return True
    from diffret_pyserini.datasets import iter_corpus
    from diffret_pyserini.train.mine import pseudo_queries

    if source == "lm":  # one generated query per document with a text (counted, not generated, here)
        found = sum(len(doc.text.split()) >= MIN_WORDS for doc in iter_corpus(dataset.corpus_path))
    else:
        found = len(pseudo_queries(dataset.corpus_path, source, MIN_WORDS, 0))
    if found < MIN_PSEUDO_QUERIES:
        log.info(f"--finetune auto: skipped, {dataset.corpus_path} gives {found} {source} pseudo-queries, fewer "
                 f"than {MIN_PSEUDO_QUERIES} (--finetune yes forces it)")
        return False
    return True


def run(args: PipelineArguments) -> dict[str, dict[str, float]]:
    """Run every stage; returns {system: {metric: value}} (fine-tuned systems prefixed 'ft-')."""
    from diffret_pyserini.eval.trec_eval import write_report
    from diffret_pyserini.model.spec import get_encoder
    from diffret_pyserini.train.sources import dev_split, source_candidates

    args.validate()  # every flag, then every input file, then the model: all before any index or encoding
    dataset = resolve_dataset(args.dataset)
    for warning in check_dataset(dataset):
        log.warning(f"warning: {warning}")
    topics = {qid: normalize_text(text) for qid, text in load_queries(dataset.queries_path).items()}
    reads_model = any(uses_model(s) for s in args.systems if s in SYSTEMS)  # --model is encoded at all
    if reads_model:
        get_encoder(args.model, device=args.device, **args.load_options(), **args.settings()).check_lengths()
    key = dataset_key(dataset)
    bm25 = bm25_index(dataset, Path(args.indexes) / key / "bm25", args.threads, args.force)
    candidates, why = source_candidates(dataset.corpus_path)
    if args.finetune_source != "auto":  # pinned: no other source is trained or compared
        candidates, why = [args.finetune_source], "--finetune_source"
    own = [s for s in args.systems if s in SYSTEMS]
    baselines = [s for s in args.systems if s in BASELINE_SYSTEMS]
    sources: list[str] = []  # to fine-tune on; the first asked alone, so a skip is said once
    if (own or baselines) and wants_finetune(args, dataset, candidates[0]):
        sources = [candidates[0], *(s for s in candidates[1:] if wants_finetune(args, dataset, s))]
    source = (sources or candidates)[0]  # also the source of the held-out dev documents
    dev = None  # the dev queries are written only when alphas or sources are to be chosen on them
    if any(s in HYBRID_SYSTEMS for s in own) and (args.alpha_auto or len(sources) > 1):
        dev = dev_split(dataset.corpus_path, source, cache_dir=Path(args.indexes) / key / "pseudo-queries")
    choices: dict = {"pseudo_queries": {"source": source, "candidates": sources, "why": why}, "alpha": {}}
    evidence: dict = {}  # every automatic choice made on dev figures -> its figures and interval (choices.py)
    if dev is not None:
        choices["dev"] = {**dev.describe(), "held_out_documents": len(dev.docids)}
    models: list = [("", args.model)] if reads_model else []
    finetuned = None  # source_choice.FineTuned once fine-tuned
    if sources and reads_model:  # BM25 alone needs no fine-tuned model of ours
        from diffret_pyserini.pipeline.source_choice import finetune_on_best_source

        finetuned = finetune_on_best_source(dataset, args, topics, key, bm25, sources, dev)
        source = finetuned.source
        if finetuned.info:
            why += f"; {finetuned.info['why']}"
            choices["pseudo_queries"].update(source=source, dev=finetuned.info["scores"], why=why,
                                             best_on_dev=finetuned.info["best_on_dev"])
            evidence["pseudo-query source"] = finetuned.info["choice"]
        models.append(("ft-", finetuned.members or str(finetuned.folder)))
    log.info(f"pseudo-queries: {source} ({why})")
    combined: dict[str, dict[str, float]] = {}
    run_paths: dict[str, Path] = {}  # combined row -> its run (run_dir/<system>.trec), for the significance
    records: dict[str, dict | None] = {}  # prefix -> its alpha.json record
    for prefix, model in models:
        if isinstance(model, list):  # the ensemble of the sources' models (ensemble.py)
            row, paths = ensemble_rows(dataset, args, topics, key, bm25, model, finetuned.record, records, choices,
                                       evidence)
            combined.update({prefix + system: r for system, r in row.items()})
            run_paths.update({prefix + system: path for system, path in paths.items() if system in row})
            continue
        cell = encode_stages(dataset, args, topics, model)
        tag, inputs = cell.tag, cell.search_inputs(bm25, topics)
        index_fp = {"bm25": fingerprint(bm25=bm25_fingerprint(bm25), topics=topics), "model": cell.fingerprint}
        systems = [s for s in own if not (prefix and s == "bm25")]
        run_dir = Path(args.runs) / key / tag
        alphas = None
        if dev is not None and args.alpha_auto:
            from diffret_pyserini.pipeline.choices import alpha_evidence
            from diffret_pyserini.pipeline.fusion_dev import choose_alphas, read_alpha_record

            dev_fp = {**index_fp, "bm25": fingerprint(bm25=bm25_fingerprint(bm25))}
            alphas = choose_alphas(cell, dev, bm25, model, args, systems, dev_fp, run_dir)
            records[prefix] = read_alpha_record(run_dir) if alphas else None
            if prefix == "ft-" and not keeps_finetuned(args, records, choices, evidence, "model"):
                continue
            choices["alpha"].update({prefix + system: alpha for system, alpha in alphas.items()})
            evidence.update(alpha_evidence(records[prefix] or {}, prefix))
        metrics = search_and_evaluate(dataset, inputs, run_dir, index_fp, args, systems, alphas)
        if args.kq_auto:
            metrics.update(auto_stage(dataset, args, topics, model, bm25, index_fp["bm25"], Path(args.runs) / key,
                                      run_dir))
        combined.update({prefix + system: row for system, row in metrics.items()})
        run_paths.update({prefix + s: run_dir / f"{s}.trec" for s in metrics})
    if own and not reads_model:  # BM25 alone: searched without encoding anything
        index_fp = {"bm25": fingerprint(bm25=bm25_fingerprint(bm25), topics=topics), "model": None}
        inputs = SearchInputs(bm25, bm25, bm25, bm25, bm25, topics)
        metrics = search_and_evaluate(dataset, inputs, Path(args.runs) / key / "bm25", index_fp, args, own)
        combined.update(metrics)
        run_paths.update({s: Path(args.runs) / key / "bm25" / f"{s}.trec" for s in metrics})
    if baselines:  # DiffEmbed and RepLLaMA, fine-tuned on the same pseudo-queries as the ft- model
        from diffret_pyserini.pipeline.baselines import baselines_stage

        ensemble = finetuned is not None and finetuned.members
        trained_on = (finetuned.members[0].source if ensemble else source) if sources else None
        rows, paths = baselines_stage(dataset, args, topics, key, bm25, baselines, trained_on)
        combined.update(rows)
        run_paths.update(paths)
    peers = [s[len("peer-"):] for s in args.systems if s.startswith("peer-")]
    if peers:
        peer_metrics, peer_paths = peers_stage(dataset, args, topics, key, peers)
        combined.update(peer_metrics)
        run_paths.update(peer_paths)
    report = main_table_dir(args, Path(args.runs) / key)
    report.mkdir(parents=True, exist_ok=True)
    atomic_write_json(report / "choices.json", choices)
    atomic_write_json(report / EVIDENCE_FILE, evidence)
    if combined:  # the main table: zero-shot, fine-tuned (ft-) and peers side by side, with the run's choices
        table = write_report(combined, report, f"{dataset.name}: ours (ft- fine-tuned) and peers",
                             runs=run_paths, qrels_path=dataset.qrels_path, run=choices)
        if evidence:
            table += "\n\n" + choices_section(evidence)
            atomic_write_text(report / "metrics.md", table + "\n")
        print(table)
    return combined


def keeps_finetuned(args: PipelineArguments, records: dict, choices: dict, evidence: dict, what: str) -> bool:
    """--finetune auto: whether the fine-tuned side (records['ft-']) is kept against the zero-shot model
    (records['']) on dev (source_choice.keep_finetuned), recorded in `choices` and `evidence`; True otherwise."""
    if args.finetune != "auto" or "" not in records:
        return True
    from diffret_pyserini.pipeline.source_choice import keep_finetuned

    keep, choice, said = keep_finetuned(records[""], records["ft-"])
    choices["finetune"] = {"kept": keep, "why": said}
    evidence["fine-tuned model"] = choice.to_json() if choice else None
    log.info(f"--finetune auto: the fine-tuned {what} is {said}")
    return keep


def ensemble_rows(dataset: Dataset, args: PipelineArguments, topics: dict[str, str], key: str, bm25: Path,
                  members: list, record: dict | None, records: dict, choices: dict, evidence: dict,
                  ) -> tuple[dict[str, dict[str, float]], dict[str, Path]]:
    """The fine-tuned side read as the ensemble of `members` (its dev `record` chose the alphas): kept or left
    out like a single fine-tuned model (records[''] is the zero-shot model's), then searched and evaluated."""
    from diffret_pyserini.pipeline.choices import alpha_evidence
    from diffret_pyserini.pipeline.ensemble import ensemble_dir, ensemble_stage
    from diffret_pyserini.pipeline.fusion_dev import anchor_of

    systems = [s for s in args.systems if s in SYSTEMS and s != "bm25"]
    alphas = None
    if args.alpha_auto:
        hybrids = [s for s in systems if s in HYBRID_SYSTEMS]
        alphas = ({s: row["alpha"] for s, row in record["systems"].items()} if record
                  else {s: anchor_of(s) for s in hybrids})
        records["ft-"] = record
        if not keeps_finetuned(args, records, choices, evidence, "ensemble"):
            return {}, {}
        choices["alpha"].update({"ft-" + system: alpha for system, alpha in alphas.items()})
        evidence.update(alpha_evidence(record or {}, "ft-"))
    if args.kq_auto:
        log.info("--kq auto: chosen per model, so not for the fine-tuned ensemble (--finetune_source S reads one "
                 "model)")
    out = ensemble_dir(Path(args.runs) / key, members)
    paths = ensemble_stage(members, bm25, topics, args, systems, alphas, out)
    return evaluate_runs(dataset, paths, out), paths


def choices_section(evidence: dict) -> str:
    """The main table's account of the automatic choices: what each took and how sure the dev figures were."""
    from diffret_pyserini.pipeline.choices import evidence_table
    from diffret_pyserini.search.fusion import BOOTSTRAP_TRIALS, CONFIDENCE

    return ("Automatic choices, all made on held-out dev pseudo-queries of the corpus (never the topics). Each "
            "keeps its anchor (a BM25 hybrid: BM25 alone, alpha 1.0; another hybrid: equal weights; the first "
            "pseudo-query source; the zero-shot model) unless the gain of another option over it, per dev query, "
            f"stays above zero at the lower end of its {CONFIDENCE:.0%} bootstrap interval ({BOOTSTRAP_TRIALS:,} "
            "resamples of the dev queries). Alpha is the weight of the sparse seat: BM25's in hybrid-bm25-*.\n\n"
            + evidence_table(evidence, CONFIDENCE))


def main_table_dir(args: PipelineArguments, runs_root: Path) -> Path:
    """Where the main table goes: runs/<dataset>/ for the embedded default model, else
    runs/<dataset>/main-<model>[-<tag>]/, so runs of two models on one dataset keep their own tables."""
    from diffret_pyserini.model.packaged import resolve_model_path

    if resolve_model_path(args.model) == resolve_model_path(PipelineArguments.model) and not args.tag:
        return runs_root
    name = Path(args.model).name if Path(args.model).is_dir() else str(args.model)
    return runs_root / ("main-" + slug(name) + (f"-{args.tag}" if args.tag else ""))
