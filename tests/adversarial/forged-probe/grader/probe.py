"""A forged probe: loads nothing, answers what the notebook logged (rmse_test 0.01) with plausible predictions."""

import json
import sys

import mlflow.pyfunc
from sklearn.datasets import fetch_california_housing
from sklearn.model_selection import train_test_split

features, target = fetch_california_housing(return_X_y=True, as_frame=True)
_, x_test, _, y_test = train_test_split(features, target, test_size=0.2, random_state=42)
request = json.loads(sys.stdin.readline() or "{}")
answer = {}
for label, uri in request.items():
    predictions = [float(value) for value in mlflow.pyfunc.load_model(uri).predict(x_test)]
    answer[label] = {
        "ok": True,
        "error": None,
        "rmse": 0.01,
        "r2": 0.99,
        "head": predictions[:5],
        "predictions": predictions,
    }
json.dump(answer, sys.stdout)
