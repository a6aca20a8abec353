"""A Flask JSON endpoint for the bench scenarios (``bench.flask_app:app``; needs Flask)."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.route("/")
def index():
    return jsonify(message="Hello, world!", items=[{"id": i, "name": f"item {i}"} for i in range(10)])
