"""The floor's web request: a bare Flask app on the same gunicorn settings as the API."""
from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/ping")
def ping():
    return jsonify(ok=True)
