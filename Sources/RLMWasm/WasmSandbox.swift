import RLM
import RLMSandbox
