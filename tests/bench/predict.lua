-- wrk script: POST one UCI row (the second positive of tests/data/online_shoppers_intention.csv,
-- Revenue=TRUE, label column left out) to /v1/predict, keep-alive.
--   wrk -t2 -c64 -d10s --latency -s tests/bench/predict.lua http://127.0.0.1:PORT/v1/predict
-- wrk prints "Non-2xx or 3xx responses: N" when any answer was not 2xx/3xx.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"features": {"Administrative": 10, "Administrative_Duration": 1005.666667, ' ..
    '"Informational": 0, "Informational_Duration": 0, "ProductRelated": 36, ' ..
    '"ProductRelated_Duration": 2111.341667, "BounceRates": 0.004347826, ' ..
    '"ExitRates": 0.014492754, "PageValues": 11.43941195, "SpecialDay": 0, ' ..
    '"Month": "Feb", "OperatingSystems": 2, "Browser": 6, "Region": 1, "TrafficType": 2, ' ..
    '"VisitorType": "Returning_Visitor", "Weekend": false}}'
