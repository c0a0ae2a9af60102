"""The Gradio Blocks of the event explorer: callbacks are small functions over (state, inputs) -> outputs."""

from __future__ import annotations

import os
import random
from urllib.parse import urlencode

import gradio as gr
import pandas as pd

from explorer_data import (ALL_CHANNELS, MAX_EVENTS, MAX_UPLOAD_MB, UserInputError, event_row, filter_events,
                           load_hub_split, read_upload)
from explorer_display import decode_objects, event_feature_table, event_figures, event_title, truth_table
from explorer_models import default_model_ids, event_batch, format_prediction, load_model, model_summary, predict
from explorer_schema import SCHEMA_SOURCE, TOPOLOGY_NAMES

DATASET_ENV = "MINERVA_EXPLORER_DATASET"
DEFAULT_DATASET = "minerva-fm/minerva-me-fhc-synthetic"
SPLITS = ["test", "validation", "train", "shifted"]
FILTER_MAX_GEV = 100.0  # default upper edge of the q3 / W filters (covers every event)


def _empty_state() -> dict:
    return {"table": None, "indices": [], "source": {}}


def _warn(err: Exception) -> str:
    gr.Warning(str(err))
    return f"⚠️ {err}"


def _loaded_message(state: dict) -> str:
    table, source = state["table"], state["source"]
    where = source.get("file") or f"{source.get('dataset')} · {source.get('split')}"
    return f"Loaded **{table.num_rows}** events from `{where}`; {len(state['indices'])} pass the filters."


def load_from_hub(dataset_id: str, split: str, max_events: float, state: dict):
    """Load a Hub dataset split into the session."""
    try:
        table = load_hub_split(dataset_id.strip(), split, int(max_events or MAX_EVENTS))
    except UserInputError as err:
        return state, _warn(err)
    state = {"table": table, "indices": list(range(table.num_rows)),
             "source": {"dataset": dataset_id.strip(), "split": split}}
    return state, _loaded_message(state)


def load_from_upload(file, max_events: float, state: dict):
    """Load an uploaded Parquet/ROOT file into the session."""
    if file is None:
        return state, "No file uploaded."
    path = file if isinstance(file, str) else getattr(file, "name", str(file))
    try:
        table = read_upload(path, int(max_events or MAX_EVENTS))
    except UserInputError as err:
        return state, _warn(err)
    state = {"table": table, "indices": list(range(table.num_rows)), "source": {"file": os.path.basename(path)}}
    return state, _loaded_message(state)


def apply_filters(channel: str, q3_min, q3_max, w_min, w_max, state: dict):
    """Restrict the browsable events to a channel and q3 / W ranges."""
    if state["table"] is None:
        return state, "Load a dataset split or a file first."
    try:
        indices = filter_events(state["table"], channel, (q3_min, q3_max), (w_min, w_max))
    except UserInputError as err:
        return state, _warn(err)
    state = {**state, "indices": indices.tolist()}
    return state, _loaded_message(state) if len(indices) else "⚠️ No event passes these filters."


def random_event(state: dict) -> int:
    """A random index among the filtered events."""
    return int(random.choice(state["indices"])) if state["indices"] else 0


def show_event(index, state: dict, request: gr.Request | None = None):
    """Event display, tables and share link of event `index` of the loaded sample."""
    empty = (None, None, None, None, None, "")
    if state["table"] is None:
        return (*empty, "Load a dataset split or a file first.")
    try:
        index = int(index or 0)
        row = event_row(state["table"], index)
    except (UserInputError, ValueError) as err:
        return (*empty, _warn(err))
    objects = decode_objects(row)
    views, scene = event_figures(objects, event_title(row, index))
    return (views, scene, objects.drop(columns=["has position"]), event_feature_table(row), truth_table(row),
            share_link(state, index, request), f"Showing {event_title(row, index)} ({len(objects)} objects).")


def share_link(state: dict, index: int, request: gr.Request | None) -> str:
    """A URL that reopens this event (dataset + split + event query parameters)."""
    source = state["source"]
    if "dataset" not in source:
        return f"event={index} (uploaded file: share the file and this index)"
    query = urlencode({"dataset": source["dataset"], "split": source["split"], "event": index})
    base = ""
    if request is not None:
        base = (request.headers.get("referer") or "").split("?")[0]
    return f"{base}?{query}"


def run_predictions(model_ids: list[str], index, state: dict):
    """Predictions of the chosen models for the current event (text lines + table)."""
    if state["table"] is None:
        return "", None, "Load a dataset split or a file first."
    if not model_ids:
        return "", None, _warn(UserInputError("choose at least one model"))
    try:
        index = int(index or 0)
        row = event_row(state["table"], index)
        batch = event_batch(state["table"], index)
        lines, records = [], []
        for model_id in model_ids:
            result = predict(load_model(model_id), batch)
            lines.append(format_prediction(model_id, result, row))
            records.append(_prediction_record(model_id, result, row))
    except UserInputError as err:
        return "", None, _warn(err)
    return "\n".join(lines), pd.DataFrame(records), f"Predicted event {index} with {len(model_ids)} model(s)."


def _prediction_record(model_id: str, result: dict, row: dict) -> dict:
    if result["task"] == "regression":
        return {"model": model_id, "E_avail pred (GeV)": round(result["e_avail"], 4),
                "E_avail true (GeV)": _round(row.get("e_avail")), "calorimetric (GeV)": _round(row.get("calo_e_avail"))}
    record = {"model": model_id, **{f"P({k})": round(v, 4) for k, v in result["probabilities"].items()}}
    for signal, score in result["scores"].items():
        record[f"{signal} score"] = round(score, 4)
        record[f"{signal} cut"] = row.get(f"tag_{signal}")
    return record


def _round(value):
    return None if value is None else round(float(value), 4)


def show_summary(model_id: str):
    """Evaluation summary (eval_results.json + plots) of one model repo."""
    if not model_id:
        return "Choose a model.", []
    try:
        return model_summary(model_id)
    except UserInputError as err:
        return _warn(err), []


def on_page_load(state: dict, request: gr.Request):
    """Honour ?dataset=&split=&event=&models= query parameters (shareable event links)."""
    params = dict(request.query_params) if request is not None else {}
    dataset, split = params.get("dataset"), params.get("split") or "test"
    event = int(params["event"]) if str(params.get("event", "")).isdigit() else 0
    models = [m for m in (params.get("models") or "").split(",") if m] or gr.update()
    if not dataset:
        return state, gr.update(), gr.update(), event, models, "Load a Hub dataset split or upload a Parquet file."
    state, message = load_from_hub(dataset, split, MAX_EVENTS, state)
    return state, dataset, split, event, models, message


def build_demo(dataset_id: str | None = None, model_ids: list[str] | None = None) -> gr.Blocks:
    """The explorer app (not launched)."""
    dataset_id = dataset_id or os.environ.get(DATASET_ENV, DEFAULT_DATASET)
    model_ids = model_ids or default_model_ids()
    with gr.Blocks(title="MINERvA event explorer") as demo:
        state = gr.State(_empty_state())
        gr.Markdown("# MINERvA event explorer\nReconstructed objects, truth and model predictions of MINERvA "
                    "neutrino events (minerva-fm, arXiv:2604.12364).")
        with gr.Row():
            dataset = gr.Textbox(dataset_id, label="Hub dataset", elem_id="dataset", scale=3)
            split = gr.Dropdown(SPLITS, value="test", label="split", allow_custom_value=True, elem_id="split")
            max_events = gr.Number(min(1000, MAX_EVENTS), label="max events", precision=0, elem_id="max-events")
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
            share = gr.Textbox(label="share link", interactive=False, elem_id="share")
        with gr.Tabs():
            with gr.Tab("Event"):
                views = gr.Plot(label="x–z / y–z", elem_id="views")
                scene = gr.Plot(label="3D", elem_id="scene")
                objects = gr.Dataframe(label="objects", interactive=False, elem_id="objects")
                with gr.Row():
                    features = gr.Dataframe(label="event features", interactive=False, elem_id="event-features")
                    truth = gr.Dataframe(label="truth and baselines", interactive=False, elem_id="truth")
            with gr.Tab("Predictions"):
                models = gr.Dropdown(model_ids, value=model_ids[:1], multiselect=True, allow_custom_value=True,
                                     label="models (Hub repo ids, ns/name[@revision])", elem_id="models")
                predict_button = gr.Button("Predict current event", variant="primary", elem_id="predict")
                prediction_text = gr.Textbox(label="predictions", lines=3, interactive=False,
                                             elem_id="prediction-text")
                prediction_table = gr.Dataframe(label="prediction vs truth vs baseline", interactive=False,
                                                elem_id="prediction-table")
            with gr.Tab("Model summary"):
                summary_model = gr.Dropdown(model_ids, value=model_ids[0], allow_custom_value=True, label="model",
                                            elem_id="summary-model")
                summary_button = gr.Button("Show evaluation", elem_id="show-summary")
                summary_md = gr.Markdown(elem_id="summary-md")
                summary_plots = gr.Gallery(label="evaluation plots", elem_id="summary-plots")
        gr.Markdown(f"<sub>schema: {SCHEMA_SOURCE}</sub>")

        event_outputs = [views, scene, objects, features, truth, share, status]
        load_hub.click(load_from_hub, [dataset, split, max_events, state], [state, status]).success(
            show_event, [index, state], event_outputs)
        upload.upload(load_from_upload, [upload, max_events, state], [state, status])
        filter_button.click(apply_filters, [channel, q3_min, q3_max, w_min, w_max, state], [state, status])
        show.click(show_event, [index, state], event_outputs)
        shuffle.click(random_event, [state], [index]).then(show_event, [index, state], event_outputs)
        predict_button.click(run_predictions, [models, index, state], [prediction_text, prediction_table, status])
        summary_button.click(show_summary, [summary_model], [summary_md, summary_plots])
        demo.load(on_page_load, [state], [state, dataset, split, index, models, status]).then(
            show_event, [index, state], event_outputs)
    return demo
