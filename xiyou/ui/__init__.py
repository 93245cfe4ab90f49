"""Streamlit pieces shared by every page (the single-character apps and the hub)."""
