"""The Gradio Blocks of the event explorer: callbacks are small functions over (state, inputs) -> outputs.

Every callback runs under `_guarded`: whatever goes wrong (bad file, model error, a bug) becomes a one-line ⚠️ message
in the status box, never Gradio's bare "Error".
"""

from __future__ import annotations

import functools
import os
import random
from urllib.parse import urlencode

import gradio as gr
import pandas as pd

from explorer_data import (ALL_CHANNELS, MAX_EVENTS, MAX_UPLOAD_MB, Sample, UserInputError, event_row, filter_events,
                           load_hub_split, read_upload)
from explorer_display import decode_objects, event_feature_table, event_figures, event_title, truth_table
from explorer_models import (allow_models, check_model_inputs, checked_model_id, default_model_ids, event_batch,
                             format_prediction, load_model, model_summary, predict, working_points)
from explorer_study import X_AXES, read_study, study_figure, study_intro, study_path, study_table
from explorer_schema import (OBJECT_TABLE_COLUMNS, PID_LABELS, PID_NOTE, SCHEMA_SOURCE, SIGNAL_CLASSES, SIGNAL_LABELS,
                             TOPOLOGY_NAMES)

DATASET_ENV = "MINERVA_EXPLORER_DATASET"
DEFAULT_DATASET = "minerva-fm/minerva-me-fhc-synthetic"
SPLITS = ["test", "validation", "train", "shifted"]
FILTER_MAX_GEV = 100.0  # default upper edge of the q3 / W filters (covers every event)
PREDICTION_COLUMNS = ("model", "quantity", "model value", "truth", "baseline", "model decision")
CSS = """
#prediction-table table, #objects table { width: 100%; }
/* evaluation plots drawn whole: no square thumbnails, no fixed-height scroll box that cuts their axis labels */
#summary-plots .grid-wrap { height: auto !important; max-height: none !important; overflow: visible !important;
                           padding-top: 2.25rem !important; }  /* below the floating block label */
#summary-plots .thumbnail-item { aspect-ratio: auto !important; height: auto !important; }
#summary-plots .thumbnail-item img { height: auto !important; object-fit: contain !important; }
"""


def launch_options() -> dict:
    """Server-side limits every launch of the explorer must use (app.py and the tests)."""
    return {"max_file_size": f"{int(MAX_UPLOAD_MB * 2**20)}b", "css": CSS}


def _empty_state() -> dict:
    return {"table": None, "indices": [], "source": {}, "total": None}


def _warn(err) -> str:
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    gr.Warning(message)
    return f"⚠️ {message}"


def _guarded(n_outputs: int, status_at: int, cleared: dict | None = None):
    """Run a callback; on any exception return a ⚠️ line at output `status_at`, the `cleared` values (output index
    -> value) and gr.update() (unchanged) everywhere else."""
    def wrap(callback):
        @functools.wraps(callback)
        def run(*args, **kwargs):
            try:
                return callback(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - a message for the visitor, not a traceback
                text = str(err) if isinstance(err, UserInputError) else f"{type(err).__name__}: {err}"
                out = [gr.update()] * n_outputs
                for i, value in (cleared or {}).items():
                    out[i] = value() if callable(value) else value
                out[status_at] = _warn(text)
                return tuple(out) if n_outputs > 1 else out[0]
        return run
    return wrap


def _loaded_message(state: dict) -> str:
    table, source, total = state["table"], state["source"], state["total"]
    where = source.get("file") or f"{source.get('dataset')} · {source.get('split')}"
    if total is not None and total <= table.num_rows:
        what = f"all **{table.num_rows}** events"
    elif total is not None:
        what = (f"the first **{table.num_rows}** of {total} events (truncated at 'max events'; at most "
                f"{MAX_EVENTS} here)")
    else:
        what = f"the first **{table.num_rows}** events (truncated at 'max events'; the split may hold more)"
    return f"Loaded {what} from `{where}`; {len(state['indices'])} pass the filters."


def _new_state(sample: Sample, source: dict) -> dict:
    return {"table": sample.table, "indices": list(range(sample.table.num_rows)), "source": source,
            "total": sample.total_events}


def _show_first(state: dict, models: list[str] | None, request: gr.Request | None):
    """(state, index 0, event outputs) with the load message in the status box."""
    outputs = list(show_event(0, models, state, request))
    outputs[-1] = f"{_loaded_message(state)} {outputs[-1]}"
    return (state, 0, *outputs)


@_guarded(9, 8)
def load_from_hub(dataset_id: str, split: str, max_events: float, models: list[str] | None, state: dict,
                  request: gr.Request = None):
    """Load a Hub dataset split into the session and show its first event."""
    sample = load_hub_split(dataset_id, split, int(max_events or MAX_EVENTS))
    state = _new_state(sample, {"dataset": dataset_id.strip(), "split": split})
    return _show_first(state, models, request)


@_guarded(9, 8)
def load_from_upload(file, max_events: float, models: list[str] | None, state: dict, request: gr.Request = None):
    """Load an uploaded Parquet/ROOT file into the session and show its first event."""
    if file is None:
        return (state, *[gr.update()] * 7, "No file uploaded.")
    path = file if isinstance(file, str) else getattr(file, "name", str(file))
    sample = read_upload(path, int(max_events or MAX_EVENTS))
    return _show_first(_new_state(sample, {"file": os.path.basename(path)}), models, request)


@_guarded(2, 1)
def apply_filters(channel: str, q3_min, q3_max, w_min, w_max, state: dict):
    """Restrict the browsable events to a channel and q3 / W ranges."""
    if state["table"] is None:
        return state, "Load a dataset split or a file first."
    indices = filter_events(state["table"], channel, (q3_min, q3_max), (w_min, w_max))
    state = {**state, "indices": indices.tolist()}
    return state, _loaded_message(state) if len(indices) else "⚠️ No event passes these filters."


def random_event(state: dict) -> int:
    """A random index among the filtered events."""
    return int(random.choice(state["indices"])) if state["indices"] else 0


@_guarded(7, 6)
def show_event(index, models: list[str] | None, state: dict, request: gr.Request = None):
    """Event display, tables and share link of event `index` of the loaded sample."""
    if state["table"] is None:
        return (*[gr.update()] * 6, "Load a dataset split or a file first.")
    index = int(index or 0)
    row = event_row(state["table"], index)
    objects = decode_objects(row)
    views, scene = event_figures(objects, event_title(row, index))
    shown = objects.drop(columns=["has position"]).assign(type=objects["type"].map(lambda k: PID_LABELS.get(k, k)))
    return (views, scene, shown, event_feature_table(row), truth_table(row),
            share_link(state, index, models, request), f"Showing {event_title(row, index)} ({len(objects)} objects).")


@_guarded(1, 0)
def update_share(index, models: list[str] | None, state: dict, request: gr.Request = None) -> str:
    """The share link after the model choice changed."""
    return share_link(state, int(index or 0), models, request) if state["table"] is not None else ""


def share_link(state: dict, index: int, models: list[str] | None, request: gr.Request | None) -> str:
    """A URL that reopens this event with these models (dataset + split + event + models query parameters)."""
    source = state["source"]
    models_part = ",".join(models or [])
    if "dataset" not in source:
        return f"event={index}&models={models_part} (uploaded file: share the file and this index)"
    query = urlencode({"dataset": source["dataset"], "split": source["split"], "event": index,
                       **({"models": models_part} if models_part else {})}, safe="/,@")
    base = (request.headers.get("referer") or "").split("?")[0] if request is not None else ""
    return f"{base}?{query}"


def _empty_predictions() -> pd.DataFrame:
    return pd.DataFrame(columns=list(PREDICTION_COLUMNS))


@_guarded(3, 2, cleared={0: "", 1: _empty_predictions})  # no stale predictions next to an error
def run_predictions(model_ids: list[str], index, state: dict):
    """Predictions of the chosen models for the current event (text lines + table)."""
    if state["table"] is None:
        return "", gr.update(), "Load a dataset split or a file first."
    if not model_ids:
        raise UserInputError("choose at least one model")
    index = int(index or 0)
    row = event_row(state["table"], index)
    check_model_inputs(row, index)
    try:
        batch = event_batch(state["table"], index)  # the collator validates values (NaN/Inf, PID range) once
    except ValueError as err:
        raise UserInputError(f"{', '.join(model_ids) or 'no model'} cannot predict event {index}: "
                             f"{type(err).__name__}: {err}") from err
    lines, records = [], []
    for model_id in model_ids:
        checked_model_id(model_id)  # before anything of the repo is fetched
        model = load_model(model_id)
        points = _working_points_or_none(model_id)
        try:
            result = predict(model, batch, points)
        except Exception as err:  # noqa: BLE001 - e.g. the model's ValueError on NaN features
            raise UserInputError(f"{model_id} cannot predict event {index}: {type(err).__name__}: "
                                 f"{str(err).splitlines()[0] if str(err) else ''}") from None
        lines.append(format_prediction(model_id, result, row, points))
        records.extend(prediction_records(model_id, result, row, points))
    return ("\n".join(lines), pd.DataFrame(records, columns=list(PREDICTION_COLUMNS)),
            f"Predicted event {index} with {len(model_ids)} model(s).")


def _working_points_or_none(model_id: str) -> dict:
    try:
        return working_points(model_id)
    except UserInputError:  # unreadable results: predict without a working point (the summary tab says why)
        return {}


def prediction_records(model_id: str, result: dict, row: dict, points: dict) -> list[dict]:
    """Rows (model, quantity, model value, truth, baseline, model decision) of one model's prediction."""
    if result["task"] == "regression":
        return [{"model": model_id, "quantity": "E_avail (GeV)", "model value": _round(result["e_avail"]),
                 "truth": _round(row.get("e_avail")), "baseline": f"calorimetric {_fmt(row.get('calo_e_avail'))}",
                 "model decision": ""}]
    topology = row.get("topology")
    records = [{"model": model_id, "quantity": f"P({name})", "model value": round(p, 4),
                "truth": "" if topology is None else ("true channel" if int(topology) == i else ""),
                "baseline": "", "model decision": ""}
               for i, (name, p) in enumerate(result["probabilities"].items())]
    for signal, score in result["scores"].items():
        point = points.get(signal)
        decision = ("no working point" if point is None else
                    f"tagged (score ≥ {point['threshold']:.4f})" if result["decisions"][signal] else
                    f"not tagged (score < {point['threshold']:.4f})")
        truth = "" if topology is None else ("signal" if int(topology) in SIGNAL_CLASSES[signal] else "background")
        tag = row.get(f"tag_{signal}")
        records.append({"model": model_id, "quantity": f"{SIGNAL_LABELS.get(signal, signal)} score",
                        "model value": round(score, 4), "truth": truth,
                        "baseline": "cut n/a" if tag is None else f"cut {'tagged' if tag else 'not tagged'}",
                        "model decision": decision})
    return records


def _round(value):
    return None if value is None else round(float(value), 4)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{float(value):.4f} GeV"


@_guarded(2, 0, cleared={1: []})
def show_summary(model_id: str):
    """Evaluation summary (eval_results.json through minerva_common.results, with uncertainties + plots) of a repo."""
    if not model_id:
        return "Choose a model.", []
    return model_summary(model_id)


@_guarded(6, 5)
def on_page_load(state: dict, request: gr.Request):
    """Honour ?dataset=&split=&event=&models= query parameters (shareable event links)."""
    params = dict(request.query_params) if request is not None else {}
    dataset, split = params.get("dataset"), params.get("split") or "test"
    event = int(params["event"]) if str(params.get("event", "")).isdigit() else 0
    models, refused = _allowed_query_models(params.get("models") or "")
    note = f" ⚠️ Not loaded (not on this Space's allow-list): {', '.join(refused)}." if refused else ""
    models_update = gr.update(value=models) if models else gr.update()
    if not dataset:
        return state, gr.update(), gr.update(), event, models_update, \
            "Load a Hub dataset split or upload a Parquet file." + note
    sample = load_hub_split(dataset, split, MAX_EVENTS)
    state = _new_state(sample, {"dataset": dataset.strip(), "split": split})
    return state, dataset, split, event, models_update, _loaded_message(state) + note


def _allowed_query_models(value: str) -> tuple[list[str], list[str]]:
    allowed, refused = [], []
    for model_id in (m.strip() for m in value.split(",") if m.strip()):
        try:
            checked_model_id(model_id)
            allowed.append(model_id)
        except UserInputError:
            refused.append(repr(model_id))
    return allowed, refused


@_guarded(7, 6)
def show_after_page_load(index, models: list[str] | None, state: dict, message: str, request: gr.Request = None):
    """The event of the share link, after the page-load message (kept alone when no sample is loaded)."""
    if state["table"] is None:
        return tuple(gr.update() for _ in range(7))
    outputs = list(show_event(index, models, state, request))
    outputs[-1] = f"{message} {outputs[-1]}"
    return tuple(outputs)


def _transfer_study_section(configured) -> None:
    """The transfer study (pretrained vs rw) of the owner's file, when one is configured or present."""
    path = study_path(configured)
    if path is None:
        return
    study, message = read_study(path)
    with gr.Accordion("Transfer study (pretrained vs random weights)", open=True, elem_id="study"):
        gr.Markdown(message or study_intro(study), elem_id="study-md")
        if study is None:
            return
        axis = gr.Radio([(title, key) for key, title in X_AXES.items()], value="labels", label="x axis",
                        elem_id="study-x")
        plot = gr.Plot(study_figure(study), label="transfer study", elem_id="study-plot")
        gr.Markdown(study_table(study), elem_id="study-table")
        axis.change(functools.partial(_study_plot, study), [axis], [plot], api_visibility="private")


def _study_plot(study, x: str):
    """The study figure against another x axis; a ⚠️ toast (figure unchanged) if drawing fails."""
    try:
        return study_figure(study, x)
    except Exception as err:  # noqa: BLE001 - a message for the visitor, not a traceback
        _warn(f"{type(err).__name__}: {err}")
        return gr.update()


def build_demo(dataset_id: str | None = None, model_ids: list[str] | None = None,
               transfer_study: str | os.PathLike | None = None) -> gr.Blocks:
    """The explorer app (not launched; launch it with `demo.launch(**launch_options())`).

    `model_ids` (the Space owner's choice) join the allow-list of models whose code may run in this process;
    `transfer_study` (else $MINERVA_EXPLORER_TRANSFER_STUDY, else transfer_study.json beside app.py) is shown in the
    summary tab.
    """
    dataset_id = dataset_id or os.environ.get(DATASET_ENV, DEFAULT_DATASET)
    model_ids = list(model_ids or default_model_ids())
    allow_models(model_ids)
    with gr.Blocks(title="MINERvA event explorer") as demo:
        state = gr.State(_empty_state())
        gr.Markdown("# MINERvA event explorer\nReconstructed objects, truth and model predictions of MINERvA "
                    "neutrino events (minerva-fm, arXiv:2604.12364).")
        with gr.Row():
            dataset = gr.Textbox(dataset_id, label="Hub dataset", elem_id="dataset", scale=3)
            split = gr.Dropdown(SPLITS, value="test", label="split", allow_custom_value=True, elem_id="split")
            max_events = gr.Number(min(1000, MAX_EVENTS), label=f"max events (≤ {MAX_EVENTS})", precision=0,
                                   minimum=1, maximum=MAX_EVENTS, elem_id="max-events")
            load_hub = gr.Button("Load split", elem_id="load-hub")
        upload = gr.File(label=f"…or upload a converted Parquet file (≤ {MAX_UPLOAD_MB:g} MB; .root needs the "
                               "minerva-fm converter)", file_types=[".parquet", ".root"], elem_id="upload")
        status = gr.Markdown("Load a Hub dataset split or upload a Parquet file.", elem_id="status")
        with gr.Row():
            channel = gr.Dropdown([ALL_CHANNELS, *TOPOLOGY_NAMES], value=ALL_CHANNELS, label="channel",
                                  elem_id="channel")
            q3_min, q3_max = gr.Number(0.0, label="q3 min (GeV)", elem_id="q3-min"), gr.Number(
                FILTER_MAX_GEV, label="q3 max (GeV)", elem_id="q3-max")
            w_min, w_max = gr.Number(0.0, label="W min (GeV)", elem_id="w-min"), gr.Number(
                FILTER_MAX_GEV, label="W max (GeV)", elem_id="w-max")
            filter_button = gr.Button("Apply filters", elem_id="apply-filters")
        with gr.Row():
            index = gr.Number(0, label="event index", precision=0, elem_id="event-index")
            show = gr.Button("Show event", variant="primary", elem_id="show-event")
            shuffle = gr.Button("Random event", elem_id="random-event")
            share = gr.Textbox(label="share link", interactive=False, elem_id="share", scale=3)
        with gr.Tabs():
            with gr.Tab("Event"):
                views = gr.Plot(label="x–z / y–z", elem_id="views")
                scene = gr.Plot(label="3D", elem_id="scene")
                gr.Markdown(f"<sub>{PID_NOTE}</sub>", elem_id="pid-note")
                objects = gr.Dataframe(pd.DataFrame(columns=list(OBJECT_TABLE_COLUMNS)), label="objects",
                                       interactive=False, elem_id="objects")
                with gr.Row():
                    features = gr.Dataframe(pd.DataFrame(columns=["feature", "value"]), label="event features",
                                            interactive=False, max_height=720, elem_id="event-features")
                    truth = gr.Dataframe(pd.DataFrame(columns=["quantity", "value", "unit"]),
                                         label="truth and baselines", interactive=False, max_height=720,
                                         elem_id="truth")
            with gr.Tab("Predictions"):
                models = gr.Dropdown(model_ids, value=model_ids[:1], multiselect=True, allow_custom_value=True,
                                     label="models (allow-listed Hub repo ids, ns/name[@revision])", elem_id="models")
                predict_button = gr.Button("Predict current event", variant="primary", elem_id="predict")
                prediction_text = gr.Textbox(label="predictions", lines=5, max_lines=20, interactive=False,
                                             elem_id="prediction-text")
                prediction_table = gr.Dataframe(_empty_predictions(),
                                                label="prediction vs truth vs baseline", interactive=False,
                                                wrap=True, elem_id="prediction-table")
            with gr.Tab("Model summary") as summary_tab:
                summary_model = gr.Dropdown(model_ids, value=model_ids[0], allow_custom_value=True, label="model",
                                            elem_id="summary-model")
                summary_button = gr.Button("Show evaluation", elem_id="show-summary")
                summary_md = gr.Markdown(elem_id="summary-md")
                summary_plots = gr.Gallery(label="evaluation plots", columns=2, object_fit="contain", height="auto",
                                           elem_id="summary-plots")
                _transfer_study_section(transfer_study)
        gr.Markdown(f"<sub>schema: {SCHEMA_SOURCE}</sub>")

        event_outputs = [views, scene, objects, features, truth, share, status]
        load_outputs = [state, index, *event_outputs]
        load_hub.click(load_from_hub, [dataset, split, max_events, models, state], load_outputs, api_name="load_split")
        upload.upload(load_from_upload, [upload, max_events, models, state], load_outputs, api_name="load_upload")
        filter_button.click(apply_filters, [channel, q3_min, q3_max, w_min, w_max, state], [state, status],
                            api_name="apply_filters")
        show.click(show_event, [index, models, state], event_outputs, api_name="show_event")
        shuffle.click(random_event, [state], [index], api_name="random_event").then(
            show_event, [index, models, state], event_outputs)
        models.change(update_share, [index, models, state], [share], api_visibility="private")
        predict_button.click(run_predictions, [models, index, state], [prediction_text, prediction_table, status],
                             api_name="predict")
        summary_button.click(show_summary, [summary_model], [summary_md, summary_plots], api_name="summary")
        for event in (summary_tab.select, summary_model.input):  # shown on opening the tab / choosing a model
            event(show_summary, [summary_model], [summary_md, summary_plots], api_visibility="private")
        demo.load(on_page_load, [state], [state, dataset, split, index, models, status], api_visibility="private").then(
            show_after_page_load, [index, models, state, status], event_outputs)
    return demo
