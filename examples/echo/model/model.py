class Model:
    def predict(self, model_input):
        return {"echo": model_input}
