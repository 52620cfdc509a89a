"""`--timeline`: P(fake) over time, one line per face track, as a PNG per video."""

from __future__ import annotations

from pathlib import Path

from defax_keras.plotting import pyplot, save_figure


def plot_timeline(record: dict, path, threshold: float = 0.5, title: str = "") -> Path:
    """Draw a video's record (`VideoScore.record`): each track's P(fake) at each sampled frame, the video's score, the threshold."""
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(8, 3.2))
    for track in record.get("tracks", []):
        points = [(frame["time"], face["p_fake"]) for frame in record["timeline"] for face in frame["faces"] if face["track"] == track["track"]]
        if points:
            times, values = zip(*points)
            axis.plot(times, values, marker="o", markersize=3, linewidth=1.2, label=f"track {track['track']} (P(fake) {track['p_fake']:.2f})")
    whole = [(frame["time"], frame["p_fake"]) for frame in record["timeline"] if frame["p_fake"] is not None and not frame["faces"]]
    if whole:
        times, values = zip(*whole)
        axis.plot(times, values, marker="s", markersize=3, linewidth=1.0, color="grey", label="whole frame")
    axis.axhline(threshold, color="black", linewidth=0.8, linestyle=":", label=f"threshold {threshold:g}")
    if record.get("p_fake") is not None:
        axis.axhline(record["p_fake"], color="crimson", linewidth=1.0, linestyle="--", label=f"video ({record['aggregate']}) {record['p_fake']:.2f}")
    axis.set_ylim(-0.02, 1.02)
    axis.set_xlabel("time (s)")
    axis.set_ylabel("P(fake)")
    axis.set_title(title or "P(fake) per face track")
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return save_figure(fig, path, {"Description": "P(fake) over time per face track"})
