"""Offline analysis: run the live pipeline over a video file and write a report.

`analyze.py` runs it and writes the files; `recorder.py` captures what the run
produced (events, scores, thumbnails); `verdicts.py` turns that into one verdict per
identity; `timeline.py` and `html.py` draw it for people.
"""
